// One queue's page (`#/queues/{vhost}/{name}`): details, charts of its messages and rates
// (history kept in the browser from the 5 s refreshes), consumers, bindings (add to an
// exchange, remove), publish through the default exchange, get (RabbitMQ's get with its
// ack modes), browse without taking (the API's peek, paged), move messages (back to
// where the x-death header says they came from, or to another queue) in batches with a
// progress bar, purge and delete with confirmation. Failures show the API's reason.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { lineChart } from '../chart.js';
import { num, rate, value as fmtValue } from '../fmt.js';
import { act, argsEditor, confirmDialog, heading, kvTable, labelled, section, select, showNotice } from '../ui.js';
import { features } from './queues.js';
import { count, messageView, publishForm } from '../messages.js';
import { moveSection } from './queue-move.js';

// chart history per queue, kept while the tab lives
const histories = new Map();

/** Draws the queue page. */
export async function render(root, ctx) {
  const { vhost, name } = ctx.params;
  const qpath = api.path('queues', vhost, name);
  const key = `${vhost}\u0000${name}`;
  if (!histories.has(key)) histories.set(key, { msgs: [], rates: [] });
  const hist = histories.get(key);
  let q = await api.get(qpath);
  const details = h('div', { 'data-role': 'details' });
  const msgChart = lineChart({ title: 'Messages', series: ['ready', 'unacked'], integer: true, format: (v) => num(Math.round(v)), points: hist.msgs });
  const rateChart = lineChart({ title: 'Rates', series: ['publish', 'deliver/get', 'ack', 'redeliver'], format: (v) => rate(v), points: hist.rates });
  const consumers = h('div', { 'data-role': 'consumers' });
  const bindings = h('div', { 'data-role': 'bindings' });
  const purge = h('button', { type: 'button', 'data-role': 'purge' }, 'Purge');
  const del = h('button', { type: 'button', class: 'danger', 'data-role': 'delete' }, 'Delete');
  purge.addEventListener('click', async () => {
    if (!(await confirmDialog(`Purge every ready message of queue ${name}?`, 'Purge'))) return;
    await act(purge, async () => {
      await api.del(`${qpath}/contents`);
      showNotice(`Queue ${name} purged.`);
      await refresh();
    });
  });
  del.addEventListener('click', async () => {
    if (!(await confirmDialog(`Delete queue ${name} and its messages?`, 'Delete'))) return;
    await act(del, async () => {
      await api.del(qpath);
      showNotice(`Queue ${name} deleted.`);
      ctx.navigate(href('queues'));
    });
  });
  const mover = moveSection(vhost, name, () => refresh());
  replace(
    root,
    heading(`Queue ${name}`, purge, del),
    h('p', { class: 'muted' }, 'Virtual host ', h('a', { href: href('vhosts', vhost) }, vhost)),
    h('div', { class: 'grid' }, section('Details', details), section('Charts', msgChart.el, rateChart.el)),
    section('Consumers', consumers),
    section('Bindings', bindings, bindForm(vhost, name, () => refresh())),
    section('Browse messages (without taking them)', browseSection(qpath)),
    section('Move messages', mover.el),
    section('Get messages', getSection(qpath)),
    section('Publish message', h('p', { class: 'muted' }, 'Through the default exchange, with the queue name as routing key.'), publishForm({ vhost, exchange: 'amq.default', routingKey: name })),
  );

  async function refresh() {
    const [nq, cs, bs] = await Promise.all([
      api.get(qpath),
      api.get(api.path('consumers', vhost)).catch(() => []),
      api.get(`${qpath}/bindings`).catch(() => []),
    ]);
    q = nq;
    draw(cs, bs);
  }

  function draw(cs, bs) {
    const now = Date.now();
    const ms = q.message_stats || {};
    const r = (k) => (ms[`${k}_details`] ? ms[`${k}_details`].rate : null);
    msgChart.push(now, [q.messages_ready ?? 0, q.messages_unacknowledged ?? 0]);
    rateChart.push(now, [r('publish'), r('deliver_get'), r('ack'), r('redeliver')]);
    replace(details, kvTable(q, [
      ['type', 'Type'], ['state', 'State'], ['node', 'Node'],
      ['durable', 'Features', () => features(q)],
      ['policy', 'Policy'], ['operator_policy', 'Operator policy'],
      ['effective_policy_definition', 'Effective policy definition'],
      ['arguments', 'Arguments'],
      ['messages_ready', 'Ready', num], ['messages_unacknowledged', 'Unacked', num],
      ['messages_delayed', 'Waiting to retry', num], ['messages', 'Total', num],
      ['consumers', 'Consumers', num], ['message_bytes', 'Message bytes', num],
    ]));
    mover.setReady(q.messages_ready ?? 0);
    drawConsumers(consumers, cs.filter((c) => c.queue && c.queue.name === name));
    drawBindings(bindings, bs, vhost, name, refresh);
  }

  await refresh();
  return { refresh, unmount: () => mover.stop() };
}

function listTable(heads, rows, empty) {
  return h(
    'table',
    { class: 'list' },
    h('thead', {}, h('tr', {}, heads.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows.length ? rows : h('tr', { class: 'empty' }, h('td', { colspan: String(heads.length) }, empty))),
  );
}

function drawConsumers(el, cs) {
  replace(el, listTable(
    ['Channel', 'Consumer tag', 'Ack required', 'Exclusive', 'Prefetch', 'Arguments'],
    cs.map((c) => {
      const ch = c.channel_details || {};
      return h('tr', {},
        h('td', {}, ch.name ? h('a', { href: href('connections', ch.connection_name || '') }, ch.name) : ''),
        h('td', {}, c.consumer_tag), h('td', {}, fmtValue(c.ack_required)), h('td', {}, fmtValue(c.exclusive)),
        h('td', {}, num(c.prefetch_count)), h('td', { class: 'wrap' }, fmtValue(c.arguments)));
    }),
    'No consumers.',
  ));
}

function drawBindings(el, bs, vhost, name, refresh) {
  replace(el, listTable(
    ['From', 'Routing key', 'Arguments', ''],
    bs.map((b) => {
      const unbind = b.source === ''
        ? h('span', { class: 'muted' }, '(default binding)')
        : h('button', { type: 'button', 'data-role': 'unbind', onclick: async (e) => {
          if (!(await confirmDialog(`Remove the binding from ${b.source} with key "${b.routing_key}"?`, 'Unbind'))) return;
          await act(e.target, async () => {
            await api.del(api.path('bindings', vhost, 'e', b.source, 'q', name, b.properties_key));
            showNotice('Binding removed.');
            await refresh();
          });
        } }, 'Unbind');
      return h('tr', {},
        h('td', {}, b.source === '' ? '(AMQP default)' : h('a', { href: href('exchanges', vhost, b.source) }, b.source)),
        h('td', { class: 'wrap' }, b.routing_key), h('td', { class: 'wrap' }, fmtValue(b.arguments)), h('td', {}, unbind));
    }),
    'No bindings.',
  ));
}

function bindForm(vhost, name, done) {
  const ex = h('input', { type: 'text', 'data-role': 'bind-exchange', required: true });
  const rk = h('input', { type: 'text', 'data-role': 'bind-routing-key' });
  const args = argsEditor('Arguments');
  const submit = h('button', { type: 'submit', 'data-role': 'bind-submit' }, 'Bind');
  const form = h('form', { 'data-role': 'bind' }, h('h3', {}, 'Add a binding from an exchange'),
    h('div', { class: 'form-row' }, labelled('From exchange', ex), labelled('Routing key', rk)), args.el, submit);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(submit, async () => {
      await api.post(api.path('bindings', vhost, 'e', ex.value, 'q', name), { routing_key: rk.value, arguments: args.value() });
      showNotice(`Bound to ${ex.value}.`);
      await done();
    });
  });
  return form;
}

function getSection(qpath) {
  const ackmode = select([
    ['ack_requeue_true', 'Nack message requeue true'], ['ack_requeue_false', 'Automatic ack'],
    ['reject_requeue_true', 'Reject requeue true'], ['reject_requeue_false', 'Reject requeue false'],
  ], 'ack_requeue_true', { 'data-role': 'get-ackmode' });
  const encoding = select([['auto', 'Auto string / base64'], ['base64', 'base64']], 'auto');
  const n = h('input', { type: 'number', min: '1', max: '100', value: '1', 'data-role': 'get-count' });
  const out = h('div', { 'data-role': 'get-result' });
  const submit = h('button', { type: 'submit', 'data-role': 'get-submit' }, 'Get messages');
  const form = h('form', {}, h('div', { class: 'form-row' }, labelled('Ack mode', ackmode), labelled('Encoding', encoding), labelled('Messages', n)), submit, out);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(submit, async () => {
      const ms = await api.post(`${qpath}/get`, { count: Number(n.value), ackmode: ackmode.value, encoding: encoding.value, truncate: 50000 });
      replace(out, ms.length ? ms.map((m, i) => messageView(m, `Message ${i + 1}`)) : h('p', { class: 'muted' }, 'Queue is empty.'));
    });
  });
  return form;
}

const PEEK_COUNT = 20;

function browseSection(qpath) {
  let offset = 0;
  const out = h('div', { 'data-role': 'browse-result' });
  const info = h('span', { class: 'muted', 'data-role': 'browse-info' });
  const browse = h('button', { type: 'button', 'data-role': 'browse' }, 'Browse');
  const prev = h('button', { type: 'button', disabled: true }, '‹ Prev');
  const next = h('button', { type: 'button', disabled: true }, 'Next ›');
  async function load(o) {
    const res = await api.get(`${qpath}/messages${api.query({ offset: o, count: PEEK_COUNT, truncate: 50000 })}`);
    offset = res.offset ?? o;
    const items = res.items || [];
    info.textContent = items.length
      ? `Messages ${num(offset + 1)}–${num(offset + items.length)} of ${count(res.total)} ready`
      : `No messages from position ${num(offset + 1)} (${count(res.total)} ready)`;
    prev.disabled = offset <= 0;
    next.disabled = offset + items.length >= res.total;
    replace(out, items.map((m) => messageView(m, `#${num((m.position ?? 0) + 1)}`)));
  }
  browse.addEventListener('click', () => act(browse, () => load(0)));
  prev.addEventListener('click', () => act(prev, () => load(Math.max(0, offset - PEEK_COUNT))));
  next.addEventListener('click', () => act(next, () => load(offset + PEEK_COUNT)));
  return h('div', {}, h('p', { class: 'muted' }, 'Shows the ready messages in queue order; nothing is delivered, requeued or marked redelivered.'),
    h('div', { class: 'buttons' }, browse, prev, next, info), out);
}
