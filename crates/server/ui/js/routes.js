// The route table: every page of the UI, its hash pattern and the module that draws it.
// `nav` puts a page in the top bar; `tags` limits a page (and its nav entry) to users with
// one of those tags (RabbitMQ's: administrators see the admin pages, policymakers the
// policies). Patterns are matched segment by segment on the decoded hash (`:x` binds
// params.x), so `#/queues/%2F/my%20q` gives {vhost: '/', name: 'my q'}.

const ADMIN = ['administrator'];
const POLICY = ['administrator', 'policymaker'];

/** The routes, in match order. `module` is relative to js/. */
export const routes = [
  { path: '', module: 'pages/overview.js', title: 'Overview', nav: 'Overview' },
  { path: 'connections', module: 'pages/connections.js', title: 'Connections', nav: 'Connections' },
  { path: 'connections/:name', module: 'pages/connection.js', title: 'Connection' },
  { path: 'channels', module: 'pages/channels.js', title: 'Channels', nav: 'Channels' },
  { path: 'exchanges', module: 'pages/exchanges.js', title: 'Exchanges', nav: 'Exchanges' },
  { path: 'exchanges/:vhost/:name', module: 'pages/exchange.js', title: 'Exchange' },
  { path: 'queues', module: 'pages/queues.js', title: 'Queues', nav: 'Queues' },
  { path: 'queues/:vhost/:name', module: 'pages/queue.js', title: 'Queue' },
  { path: 'consumers', module: 'pages/consumers.js', title: 'Consumers', nav: 'Consumers' },
  { path: 'users', module: 'pages/users.js', title: 'Users', nav: 'Users', tags: ADMIN },
  { path: 'users/:name', module: 'pages/user.js', title: 'User', tags: ADMIN },
  { path: 'vhosts', module: 'pages/vhosts.js', title: 'Virtual hosts', nav: 'Vhosts', tags: ADMIN },
  { path: 'vhosts/:name', module: 'pages/vhost.js', title: 'Virtual host', tags: ADMIN },
  { path: 'permissions', module: 'pages/permissions.js', title: 'Permissions', nav: 'Permissions', tags: ADMIN },
  { path: 'limits', module: 'pages/limits.js', title: 'Limits', nav: 'Limits', tags: ADMIN },
  { path: 'policies', module: 'pages/policies.js', title: 'Policies', nav: 'Policies', tags: POLICY },
  { path: 'operator-policies', module: 'pages/operator-policies.js', title: 'Operator policies', nav: 'Op. policies', tags: ADMIN },
  { path: 'definitions', module: 'pages/definitions.js', title: 'Definitions', nav: 'Definitions', tags: ADMIN },
];
