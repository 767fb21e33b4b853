// The queues list (`#/queues`): paged, sorted and filtered by the server (the table asks
// /api/queues with `page`, `page_size`, `name`, `use_regex`, `sort`, `sort_reverse` and
// only the `columns` it shows), so it stays fast with 10,000 queues; and the form that
// declares a queue (vhost, name, type, durability, auto-delete, typed arguments).

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num, rate } from '../fmt.js';
import { act, argsEditor, heading, labelled, section, select, showError, showNotice, table } from '../ui.js';

const COLUMNS = [
  'name', 'vhost', 'type', 'state', 'durable', 'auto_delete', 'exclusive', 'arguments', 'policy',
  'messages_ready', 'messages_unacknowledged', 'messages', 'consumers',
  'message_stats.publish_details.rate', 'message_stats.deliver_get_details.rate', 'message_stats.ack_details.rate',
].join(',');

/** Draws the queues page. */
export async function render(root) {
  const t = table({
    id: 'queues',
    columns: [
      { label: 'Name', sort: 'name', cls: 'wrap', value: (q) => h('a', { href: href('queues', q.vhost, q.name), 'data-queue': q.name }, q.name) },
      { label: 'Vhost', sort: 'vhost' },
      { label: 'Type', sort: 'type' },
      { label: 'State', sort: 'state' },
      { label: 'Features', value: features },
      { label: 'Policy', sort: 'policy', value: (q) => q.policy || '' },
      { label: 'Ready', sort: 'messages_ready', cls: 'num', value: (q) => num(q.messages_ready) },
      { label: 'Unacked', sort: 'messages_unacknowledged', cls: 'num', value: (q) => num(q.messages_unacknowledged) },
      { label: 'Total', sort: 'messages', cls: 'num', value: (q) => num(q.messages) },
      { label: 'Incoming', sort: 'message_stats.publish_details.rate', cls: 'num', value: (q) => rateOf(q, 'publish') },
      { label: 'Deliver/get', sort: 'message_stats.deliver_get_details.rate', cls: 'num', value: (q) => rateOf(q, 'deliver_get') },
      { label: 'Ack', sort: 'message_stats.ack_details.rate', cls: 'num', value: (q) => rateOf(q, 'ack') },
      { label: 'Consumers', sort: 'consumers', cls: 'num', value: (q) => num(q.consumers) },
    ],
    load: (params) => api.get('/api/queues' + api.query({ ...params, columns: COLUMNS })),
    empty: 'No queues.',
  });
  const formSlot = h('div');
  replace(root, heading('Queues'), section('All queues', t.el), formSlot);
  // the list first: the form's vhost choice must not hold it up
  const shown = t.refresh();
  replace(formSlot, await declareForm(() => t.refresh()));
  await shown.catch(showError);
  return { refresh: t.refresh };
}

function rateOf(q, k) {
  const s = q.message_stats && q.message_stats[`${k}_details`];
  return s ? rate(s.rate) : '';
}

/** RabbitMQ's feature badges: D durable, AD auto-delete, Excl exclusive, Args. */
export function features(q) {
  const out = [];
  const badge = (label, title) => h('span', { class: 'feature', title }, label);
  if (q.durable) out.push(badge('D', 'durable'));
  if (q.auto_delete) out.push(badge('AD', 'auto-delete'));
  if (q.exclusive) out.push(badge('Excl', 'exclusive'));
  const args = q.arguments || {};
  const keys = Object.keys(args).filter((k) => k !== 'x-queue-type');
  if (keys.length) out.push(badge('Args', keys.map((k) => `${k}: ${JSON.stringify(args[k])}`).join('\n')));
  return out;
}

async function declareForm(done) {
  let vhosts = [];
  try {
    vhosts = (await api.get('/api/vhosts')).map((v) => v.name);
  } catch {
    vhosts = ['/'];
  }
  const vhost = select(vhosts, vhosts.includes('/') ? '/' : vhosts[0], { 'data-role': 'declare-vhost' });
  const name = h('input', { type: 'text', required: true, 'data-role': 'declare-name' });
  const type = select([['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']], 'classic', { 'data-role': 'declare-type' });
  const durable = select([['true', 'Durable'], ['false', 'Transient']], 'true', { 'data-role': 'declare-durable' });
  const autoDelete = select([['false', 'No'], ['true', 'Yes']], 'false', { 'data-role': 'declare-auto-delete' });
  const args = argsEditor('Arguments');
  const submit = h('button', { type: 'submit', class: 'primary', 'data-role': 'declare-submit' }, 'Add queue');
  const form = h(
    'form',
    { 'data-role': 'declare-queue' },
    h('div', { class: 'form-row' }, labelled('Virtual host', vhost), labelled('Name', name), labelled('Type', type), labelled('Durability', durable), labelled('Auto delete', autoDelete)),
    args.el,
    submit,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(submit, async () => {
      const a = args.value();
      if (type.value !== 'classic') a['x-queue-type'] = type.value;
      await api.put(api.path('queues', vhost.value, name.value), { durable: durable.value === 'true', auto_delete: autoDelete.value === 'true', arguments: a });
      showNotice(`Queue ${name.value} declared.`);
      name.value = '';
      await done();
    });
  });
  return section('Add a queue', form);
}
