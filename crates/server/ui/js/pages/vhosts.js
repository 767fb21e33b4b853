// The virtual hosts list (`#/vhosts`, administrators only): name, description, tags,
// limits and the message counts of its queues (summed here from /api/queues, asking only
// for the columns it needs, since /api/vhosts does not carry them); the form that adds
// a vhost (description, tags); delete per row with confirmation.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num, value as fmtValue } from '../fmt.js';
import { heading, labelled, section, table } from '../ui.js';
import { actionForm, dangerButton, tagList } from '../lists.js';

/** Messages per vhost: {vhost: {messages, ready, unacked, queues}}. */
export async function messageCounts() {
  const qs = await api.get('/api/queues?columns=vhost,messages,messages_ready,messages_unacknowledged').catch(() => []);
  const out = {};
  for (const q of qs) {
    const c = out[q.vhost] || (out[q.vhost] = { messages: 0, ready: 0, unacked: 0, queues: 0 });
    c.messages += q.messages || 0;
    c.ready += q.messages_ready || 0;
    c.unacked += q.messages_unacknowledged || 0;
    c.queues += 1;
  }
  return out;
}

/** Draws the vhosts page. */
export async function render(root) {
  let counts = {};
  const count = (v, k) => num((counts[v.name] || {})[k] || 0);
  const t = table({
    id: 'vhosts',
    columns: [
      { label: 'Name', sort: 'name', cls: 'wrap', value: (v) => h('a', { href: href('vhosts', v.name), 'data-vhost': v.name }, v.name) },
      { label: 'Description', sort: 'description', cls: 'wrap' },
      { label: 'Tags', value: (v) => tagList(v.tags).join(', ') },
      { label: 'Limits', value: (v) => (v.limits && Object.keys(v.limits).length ? fmtValue(v.limits) : '') },
      { label: 'Queues', cls: 'num', value: (v) => count(v, 'queues') },
      { label: 'Ready', cls: 'num', value: (v) => count(v, 'ready') },
      { label: 'Unacked', cls: 'num', value: (v) => count(v, 'unacked') },
      { label: 'Total', cls: 'num', value: (v) => count(v, 'messages') },
      { label: '', value: (v) => dangerButton('Delete', 'delete-vhost', `Delete virtual host ${v.name} with all its queues, exchanges and messages?`, () => api.del(api.path('vhosts', v.name)), `Virtual host ${v.name} deleted.`, () => t.refresh()) },
    ],
    load: async () => {
      const [vs, cs] = await Promise.all([api.get('/api/vhosts'), messageCounts()]);
      counts = cs;
      return vs;
    },
    empty: 'No virtual hosts.',
  });
  replace(root, heading('Virtual hosts'), section('All virtual hosts', t.el), section('Add a virtual host', addForm(() => t.refresh())));
  await t.refresh();
  return { refresh: t.refresh };
}

function addForm(done) {
  const name = h('input', { type: 'text', required: true, 'data-role': 'vhost-name' });
  const desc = h('input', { type: 'text', 'data-role': 'vhost-description', size: '40' });
  const tags = h('input', { type: 'text', 'data-role': 'vhost-tags', placeholder: 'comma-separated' });
  return actionForm('add-vhost', [h('div', { class: 'form-row' }, labelled('Name', name), labelled('Description', desc), labelled('Tags', tags))],
    'Add virtual host', async () => {
      await api.put(api.path('vhosts', name.value), { description: desc.value, tags: tagList(tags.value).join(',') });
      const added = name.value;
      for (const el of [name, desc, tags]) el.value = '';
      await done();
      return `Virtual host ${added} added.`;
    });
}
