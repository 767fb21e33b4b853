// The users list (`#/users`, administrators only): name, tags, whether it has a password,
// the vhosts it has permissions in; the form that adds a user (password and tags); a
// delete per row with confirmation. A user's page edits tags, password, permissions and
// limits.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { heading, labelled, section, table } from '../ui.js';
import { actionForm, dangerButton, tagList } from '../lists.js';

/** RabbitMQ's tags, offered as choices (any other can be typed). */
export const KNOWN_TAGS = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

/** A tags input with buttons that add a known tag. */
export function tagsInput(role, initial) {
  const input = h('input', { type: 'text', 'data-role': role, value: initial || '', placeholder: 'comma-separated', size: '40' });
  const add = (t) => {
    const tags = tagList(input.value);
    if (!tags.includes(t)) tags.push(t);
    input.value = tags.join(', ');
  };
  const quick = h('span', { class: 'quick-tags' }, 'Set: ', KNOWN_TAGS.map((t) => h('button', { type: 'button', class: 'link', onclick: () => add(t) }, t)));
  return { input, el: h('div', {}, input, quick) };
}

/** Draws the users page. */
export async function render(root, ctx) {
  let perms = [];
  const t = table({
    id: 'users',
    columns: [
      { label: 'Name', sort: 'name', cls: 'wrap', value: (u) => h('a', { href: href('users', u.name), 'data-user': u.name }, u.name) },
      { label: 'Tags', sort: 'tags', value: (u) => tagList(u.tags).join(', ') },
      { label: 'Can access virtual hosts', value: (u) => perms.filter((p) => p.user === u.name).map((p) => p.vhost).sort().join(', ') || 'No access' },
      { label: 'Has password', value: (u) => (u.password_hash ? 'yes' : 'no') },
      { label: '', value: (u) => (u.name === ctx.user.name ? '' : dangerButton('Delete', 'delete-user', `Delete user ${u.name}?`, () => api.del(api.path('users', u.name)), `User ${u.name} deleted.`, () => t.refresh())) },
    ],
    load: async () => {
      const [us, ps] = await Promise.all([api.get('/api/users'), api.get('/api/permissions').catch(() => [])]);
      perms = ps;
      return us;
    },
    empty: 'No users.',
  });
  replace(root, heading('Users'), section('All users', t.el), section('Add a user', addForm(() => t.refresh())));
  await t.refresh();
  return { refresh: t.refresh };
}

function addForm(done) {
  const name = h('input', { type: 'text', required: true, 'data-role': 'user-name', autocomplete: 'off' });
  const pass = h('input', { type: 'password', 'data-role': 'user-password', autocomplete: 'new-password' });
  const pass2 = h('input', { type: 'password', 'data-role': 'user-password2', autocomplete: 'new-password' });
  const tags = tagsInput('user-tags');
  return actionForm('add-user', [
    h('div', { class: 'form-row' }, labelled('Username', name), labelled('Password', pass), labelled('Password (again)', pass2)),
    labelled('Tags', tags.el),
  ], 'Add user', async () => {
    if (pass.value !== pass2.value) throw new Error('The passwords differ.');
    const body = { tags: tagList(tags.input.value).join(',') };
    // no password: a user that cannot log in with one (RabbitMQ's "no password" choice)
    if (pass.value) body.password = pass.value;
    else body.password_hash = '';
    await api.put(api.path('users', name.value), body);
    const added = name.value;
    for (const el of [name, pass, pass2, tags.input]) el.value = '';
    await done();
    return `User ${added} added.`;
  });
}
