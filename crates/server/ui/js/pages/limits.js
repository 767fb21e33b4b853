// Every vhost limit and user limit (`#/limits`, administrators only), each with a clear
// button, and forms that set one (vhost: `max-connections`, `max-queues`; user:
// `max-connections`, `max-channels`).

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num } from '../fmt.js';
import { heading, labelled, section, select } from '../ui.js';
import { actionForm, dangerButton, drawList, vhostNames } from '../lists.js';
import { limitInputs } from './user.js';

/** Draws the limits page. */
export async function render(root) {
  const vl = h('div', { 'data-role': 'vhost-limits' });
  const ul = h('div', { 'data-role': 'user-limits' });
  const [vhosts, users] = await Promise.all([vhostNames(), api.get('/api/users').then((us) => us.map((u) => u.name).sort())]);
  replace(
    root,
    heading('Limits'),
    section('Virtual host limits', vl, form('vhost', vhosts, ['max-connections', 'max-queues'], 'vhost-limits', refresh)),
    section('User limits', ul, form('user', users, ['max-connections', 'max-channels'], 'user-limits', refresh)),
  );

  async function refresh() {
    const [vs, us] = await Promise.all([api.get('/api/vhost-limits'), api.get('/api/user-limits')]);
    draw(vl, vs, 'vhost', 'vhost-limits', 'vhosts');
    draw(ul, us, 'user', 'user-limits', 'users');
  }

  function draw(el, list, who, base, page) {
    const rows = [];
    for (const entry of list) {
      for (const [k, v] of Object.entries(entry.value || {})) {
        const name = entry[who];
        rows.push([h('a', { href: href(page, name) }, name), k, num(v),
          dangerButton('Clear', 'clear-limit', `Clear ${k} of ${who} ${name}?`, () => api.del(api.path(base, name, k)), 'Limit cleared.', refresh)]);
      }
    }
    drawList(el, [who === 'vhost' ? 'Virtual host' : 'User', 'Limit', 'Value', ''], rows, 'No limits.');
  }

  await refresh();
  return { refresh };
}

function form(who, names, limits, base, done) {
  const target = select(names, names[0], { 'data-role': `${who}-limit-target` });
  const l = limitInputs(limits, `${who}-limit`);
  return actionForm(`set-${who}-limit`, [h('h3', {}, 'Set a limit'),
    h('div', { class: 'form-row' }, labelled(who === 'vhost' ? 'Virtual host' : 'User', target), labelled('Limit', l.which), labelled('Value', l.value))],
  'Set limit', async () => {
    await api.put(api.path(base, target.value, l.which.value), { value: l.parsed() });
    await done();
    return `${l.which.value} of ${target.value} set.`;
  });
}
