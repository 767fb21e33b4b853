// Every permission and topic permission (`#/permissions`, administrators only): who may
// configure, write and read what in which vhost, each with a clear button; set one from
// here or from the user's or vhost's page.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { heading, labelled, section, select, table } from '../ui.js';
import { actionForm, dangerButton, vhostNames } from '../lists.js';

/** Draws the permissions page. */
export async function render(root) {
  const clear = (p, topic) => dangerButton('Clear', topic ? 'clear-topic-permission' : 'clear-permission',
    `Clear the ${topic ? 'topic ' : ''}permissions of ${p.user} in ${p.vhost}?`,
    () => api.del(api.path(topic ? 'topic-permissions' : 'permissions', p.vhost, p.user)), 'Permissions cleared.', refresh);
  const common = [
    { label: 'User', sort: 'user', value: (p) => h('a', { href: href('users', p.user) }, p.user) },
    { label: 'Virtual host', sort: 'vhost', value: (p) => h('a', { href: href('vhosts', p.vhost) }, p.vhost) },
  ];
  const perms = table({
    id: 'permissions',
    defaultSort: 'user',
    columns: [...common, { label: 'Configure', sort: 'configure' }, { label: 'Write', sort: 'write' }, { label: 'Read', sort: 'read' }, { label: '', value: (p) => clear(p, false) }],
    load: async () => (await api.get('/api/permissions')).map((p) => ({ ...p, name: p.user })),
    empty: 'No permissions.',
  });
  const topics = table({
    id: 'topic-permissions',
    defaultSort: 'user',
    columns: [...common, { label: 'Exchange', sort: 'exchange' }, { label: 'Write', sort: 'write' }, { label: 'Read', sort: 'read' }, { label: '', value: (p) => clear(p, true) }],
    load: async () => (await api.get('/api/topic-permissions')).map((p) => ({ ...p, name: p.user })),
    empty: 'No topic permissions.',
  });
  const [users, vhosts] = await Promise.all([api.get('/api/users').then((us) => us.map((u) => u.name).sort()), vhostNames()]);
  replace(root, heading('Permissions'), section('Permissions', perms.el, setForm(users, vhosts, refresh)), section('Topic permissions', topics.el));

  async function refresh() {
    await Promise.all([perms.refresh(), topics.refresh()]);
  }

  await refresh();
  return { refresh };
}

function setForm(users, vhosts, done) {
  const user = select(users, users[0], { 'data-role': 'perm-user' });
  const vhost = select(vhosts, vhosts.includes('/') ? '/' : vhosts[0], { 'data-role': 'perm-vhost' });
  const [c, w, r] = ['configure', 'write', 'read'].map((k) => h('input', { type: 'text', value: '.*', 'data-role': `perm-${k}` }));
  return actionForm('set-permission', [h('h3', {}, 'Set permissions'),
    h('div', { class: 'form-row' }, labelled('User', user), labelled('Virtual host', vhost), labelled('Configure regexp', c), labelled('Write regexp', w), labelled('Read regexp', r))],
  'Set permissions', async () => {
    await api.put(api.path('permissions', vhost.value, user.value), { configure: c.value, write: w.value, read: r.value });
    await done();
    return `Permissions of ${user.value} in ${vhost.value} set.`;
  });
}
