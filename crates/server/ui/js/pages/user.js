// One user's page (`#/users/{name}`, administrators only): its tags and password (edit:
// PUT /api/users/{name} keeps the password when none is given), its permissions per vhost
// and topic permissions (set, clear), its limits (`max-connections`, `max-channels`: set,
// clear), and delete with confirmation.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num } from '../fmt.js';
import { heading, kvTable, labelled, section, select } from '../ui.js';
import { actionForm, dangerButton, drawList, tagList, vhostSelect } from '../lists.js';
import { tagsInput } from './users.js';

/** Draws the user page. */
export async function render(root, ctx) {
  const { name } = ctx.params;
  const upath = api.path('users', name);
  let u = await api.get(upath);
  const details = h('div', { 'data-role': 'details' });
  const perms = h('div', { 'data-role': 'permissions' });
  const topics = h('div', { 'data-role': 'topic-permissions' });
  const limits = h('div', { 'data-role': 'user-limits' });
  const del = dangerButton('Delete', 'delete', `Delete user ${name}?`, () => api.del(upath), `User ${name} deleted.`, () => ctx.navigate(href('users')));
  const [permVhost, topicVhost] = await Promise.all([vhostSelect('perm-vhost'), vhostSelect('topic-vhost')]);
  replace(
    root,
    heading(`User ${name}`, name === ctx.user.name ? null : del),
    h('div', { class: 'grid' }, section('Details', details), section('Update this user', editForm(name, upath, () => u, () => refresh()))),
    section('Permissions', perms, permissionForm(name, permVhost, () => refresh())),
    section('Topic permissions', topics, topicForm(name, topicVhost, () => refresh())),
    section('Limits', limits, limitForm(name, () => refresh())),
  );

  async function refresh() {
    const [nu, ps, ts, ls] = await Promise.all([
      api.get(upath),
      api.get(`${upath}/permissions`),
      api.get(`${upath}/topic-permissions`),
      api.get(api.path('user-limits', name)).catch(() => []),
    ]);
    u = nu;
    replace(details, kvTable(u, [['tags', 'Tags', (t) => tagList(t).join(', ') || '(none)'], ['hashing_algorithm', 'Password hashing'], ['password_hash', 'Has password', (p) => (p ? 'yes' : 'no')]]));
    drawList(perms, ['Virtual host', 'Configure', 'Write', 'Read', ''], ps.map((p) => [
      h('a', { href: href('vhosts', p.vhost) }, p.vhost), p.configure, p.write, p.read,
      dangerButton('Clear', 'clear-permission', `Clear the permissions of ${name} in ${p.vhost}?`, () => api.del(api.path('permissions', p.vhost, name)), 'Permissions cleared.', refresh),
    ]), 'No permissions: this user cannot use any virtual host.');
    drawList(topics, ['Virtual host', 'Exchange', 'Write', 'Read', ''], ts.map((p) => [
      p.vhost, p.exchange, p.write, p.read,
      dangerButton('Clear', 'clear-topic-permission', `Clear the topic permissions of ${name} in ${p.vhost}?`, () => api.del(api.path('topic-permissions', p.vhost, name)), 'Topic permissions cleared.', refresh),
    ]), 'No topic permissions.');
    const value = (ls[0] && ls[0].value) || {};
    drawList(limits, ['Limit', 'Value', ''], Object.entries(value).map(([k, v]) => [
      k, num(v), dangerButton('Clear', 'clear-limit', `Clear ${k} of ${name}?`, () => api.del(api.path('user-limits', name, k)), 'Limit cleared.', refresh),
    ]), 'No limits.');
  }

  await refresh();
  return { refresh };
}

function editForm(name, upath, current, done) {
  const tags = tagsInput('edit-tags', tagList(current().tags).join(', '));
  const pass = h('input', { type: 'password', 'data-role': 'edit-password', autocomplete: 'new-password', placeholder: 'unchanged when empty' });
  return actionForm('edit-user', [labelled('Tags', tags.el), labelled('New password', pass)], 'Update user', async () => {
    const body = { tags: tagList(tags.input.value).join(',') };
    if (pass.value) body.password = pass.value;
    await api.put(upath, body);
    pass.value = '';
    await done();
    return `User ${name} updated.`;
  });
}

function permissionForm(name, vhost, done) {
  const [c, w, r] = ['configure', 'write', 'read'].map((k) => h('input', { type: 'text', value: '.*', 'data-role': `perm-${k}` }));
  return actionForm('set-permission', [h('h3', {}, 'Set permissions'),
    h('div', { class: 'form-row' }, labelled('Virtual host', vhost), labelled('Configure regexp', c), labelled('Write regexp', w), labelled('Read regexp', r))],
  'Set permissions', async () => {
    await api.put(api.path('permissions', vhost.value, name), { configure: c.value, write: w.value, read: r.value });
    await done();
    return `Permissions of ${name} in ${vhost.value} set.`;
  });
}

function topicForm(name, vhost, done) {
  const ex = h('input', { type: 'text', value: 'amq.topic', 'data-role': 'topic-exchange' });
  const [w, r] = ['write', 'read'].map((k) => h('input', { type: 'text', value: '.*', 'data-role': `topic-${k}` }));
  return actionForm('set-topic-permission', [h('h3', {}, 'Set topic permissions'),
    h('div', { class: 'form-row' }, labelled('Virtual host', vhost), labelled('Exchange', ex), labelled('Write regexp', w), labelled('Read regexp', r))],
  'Set topic permissions', async () => {
    await api.put(api.path('topic-permissions', vhost.value, name), { exchange: ex.value, write: w.value, read: r.value });
    await done();
    return `Topic permissions of ${name} in ${vhost.value} set.`;
  });
}

/** The limit form shared with the vhost page: a limit name and a whole number. */
export function limitInputs(names, role) {
  const which = select(names, names[0], { 'data-role': `${role}-name` });
  const value = h('input', { type: 'number', min: '-1', step: '1', required: true, 'data-role': `${role}-value` });
  const parsed = () => {
    const n = Number(value.value);
    if (value.value.trim() === '' || !Number.isInteger(n)) throw new Error(`${which.value}: a whole number (negative: no limit)`);
    return n;
  };
  return { which, value, parsed };
}

function limitForm(name, done) {
  const l = limitInputs(['max-connections', 'max-channels'], 'user-limit');
  return actionForm('set-user-limit', [h('h3', {}, 'Set a limit'), h('div', { class: 'form-row' }, labelled('Limit', l.which), labelled('Value', l.value))],
    'Set limit', async () => {
      await api.put(api.path('user-limits', name, l.which.value), { value: l.parsed() });
      await done();
      return `${l.which.value} of ${name} set.`;
    });
}
