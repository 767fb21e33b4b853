// The connections list (`#/connections`): paged, sorted and filtered by the server (the
// API's `page`, `page_size`, `name`, `use_regex`, `sort`, `sort_reverse`), with the user,
// vhost, the client's product and version (from its client properties), peer, channels,
// TLS and state (the API keeps no per-connection byte rates yet). A monitoring user sees every
// connection, others their own (the API decides).

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num } from '../fmt.js';
import { heading, section, table } from '../ui.js';

/** The client's product and version from its client properties ("pika 1.3.2"). */
export function client(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter((x) => x !== undefined && x !== null && x !== '').join(' ');
}

/** Whether the connection came over TLS ('yes'/'no'; '' when the API does not say). */
export function tls(c) {
  if (c.ssl === undefined || c.ssl === null) return '';
  return c.ssl ? 'yes' : 'no';
}

/** Draws the connections page. */
export async function render(root) {
  const t = table({
    id: 'connections',
    columns: [
      { label: 'Name', sort: 'name', cls: 'wrap', value: (c) => h('a', { href: href('connections', c.name), 'data-connection': c.name }, c.name, c.user_provided_name ? h('span', { class: 'muted' }, ` (${c.user_provided_name})`) : null) },
      { label: 'User', sort: 'user' },
      { label: 'Vhost', sort: 'vhost' },
      { label: 'Client', sort: 'client_properties.product', value: client },
      { label: 'Peer', sort: 'peer_host', value: (c) => `${c.peer_host}:${c.peer_port}` },
      { label: 'Channels', sort: 'channels', cls: 'num', value: (c) => num(c.channels) },
      { label: 'TLS', sort: 'ssl', value: tls },
      { label: 'State', sort: 'state' },
    ],
    load: (params) => api.get('/api/connections' + api.query(params)),
    empty: 'No connections.',
  });
  replace(root, heading('Connections'), section('All connections', t.el));
  await t.refresh();
  return { refresh: t.refresh };
}
