// One virtual host's page (`#/vhosts/{name}`, administrators only): details with its
// message counts, the users' permissions in it (set for a user, clear), its limits
// (`max-connections`, `max-queues`: set, clear), and delete with confirmation.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num } from '../fmt.js';
import { heading, kvTable, labelled, section, select } from '../ui.js';
import { actionForm, dangerButton, drawList, tagList } from '../lists.js';
import { limitInputs } from './user.js';
import { messageCounts } from './vhosts.js';

/** Draws the vhost page. */
export async function render(root, ctx) {
  const { name } = ctx.params;
  const vpath = api.path('vhosts', name);
  const details = h('div', { 'data-role': 'details' });
  const perms = h('div', { 'data-role': 'permissions' });
  const limits = h('div', { 'data-role': 'vhost-limits' });
  const users = (await api.get('/api/users')).map((u) => u.name).sort();
  const del = dangerButton('Delete', 'delete', `Delete virtual host ${name} with all its queues, exchanges and messages?`, () => api.del(vpath), `Virtual host ${name} deleted.`, () => ctx.navigate(href('vhosts')));
  replace(
    root,
    heading(`Virtual host ${name}`, del),
    section('Details', details),
    section('Permissions', perms, permissionForm(name, users, () => refresh())),
    section('Limits', limits, limitForm(name, () => refresh())),
  );

  async function refresh() {
    const [v, ps, counts] = await Promise.all([api.get(vpath), api.get(`${vpath}/permissions`), messageCounts()]);
    const c = counts[name] || { messages: 0, ready: 0, unacked: 0, queues: 0 };
    replace(details, kvTable({ ...v, ...c }, [
      ['description', 'Description'], ['tags', 'Tags', (t) => tagList(t).join(', ')],
      ['queues', 'Queues', num], ['ready', 'Ready messages', num], ['unacked', 'Unacked messages', num], ['messages', 'Total messages', num],
    ]));
    drawList(perms, ['User', 'Configure', 'Write', 'Read', ''], ps.map((p) => [
      h('a', { href: href('users', p.user) }, p.user), p.configure, p.write, p.read,
      dangerButton('Clear', 'clear-permission', `Clear the permissions of ${p.user} in ${name}?`, () => api.del(api.path('permissions', name, p.user)), 'Permissions cleared.', refresh),
    ]), 'No user has permissions here.');
    drawList(limits, ['Limit', 'Value', ''], Object.entries(v.limits || {}).map(([k, val]) => [
      k, num(val), dangerButton('Clear', 'clear-limit', `Clear ${k} of ${name}?`, () => api.del(api.path('vhost-limits', name, k)), 'Limit cleared.', refresh),
    ]), 'No limits.');
  }

  await refresh();
  return { refresh };
}

function permissionForm(vhost, users, done) {
  const user = select(users, users.includes('guest') ? 'guest' : users[0], { 'data-role': 'perm-user' });
  const [c, w, r] = ['configure', 'write', 'read'].map((k) => h('input', { type: 'text', value: '.*', 'data-role': `perm-${k}` }));
  return actionForm('set-permission', [h('h3', {}, 'Set permissions'),
    h('div', { class: 'form-row' }, labelled('User', user), labelled('Configure regexp', c), labelled('Write regexp', w), labelled('Read regexp', r))],
  'Set permissions', async () => {
    await api.put(api.path('permissions', vhost, user.value), { configure: c.value, write: w.value, read: r.value });
    await done();
    return `Permissions of ${user.value} in ${vhost} set.`;
  });
}

function limitForm(vhost, done) {
  const l = limitInputs(['max-connections', 'max-queues'], 'vhost-limit');
  return actionForm('set-vhost-limit', [h('h3', {}, 'Set a limit'), h('div', { class: 'form-row' }, labelled('Limit', l.which), labelled('Value', l.value))],
    'Set limit', async () => {
      await api.put(api.path('vhost-limits', vhost, l.which.value), { value: l.parsed() });
      await done();
      return `${l.which.value} of ${vhost} set.`;
    });
}
