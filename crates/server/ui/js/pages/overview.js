// The overview page (`#/`): counts of connections, channels, queues, consumers and
// exchanges; live charts of the message rates (publish, deliver, ack, redeliver) and of
// the ready and unacknowledged messages, from /api/overview polled every 5 s with the
// history kept here in the browser; each node's memory and free disk against their alarm
// limits (/api/nodes); the listeners.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { lineChart, rates } from '../chart.js';
import { bytes, duration, num, rate } from '../fmt.js';
import { heading, section } from '../ui.js';

// the history survives leaving the page and coming back (until the tab closes)
const history = { rates: [], messages: [], prev: null };
const RATE_KEYS = ['publish', 'deliver_get', 'ack', 'redeliver'];

/** Draws the overview. */
export async function render(root) {
  const stats = h('div', { class: 'stats' });
  const rateChart = lineChart({ series: ['publish', 'deliver', 'ack', 'redeliver'], format: (v) => rate(v), points: history.rates });
  const msgChart = lineChart({ series: ['ready', 'unacked', 'total'], integer: true, format: (v) => num(Math.round(v)), points: history.messages });
  const nodes = h('div', { 'data-role': 'nodes' });
  const listeners = h('div', { 'data-role': 'listeners' });
  replace(
    root,
    heading('Overview'),
    stats,
    h('div', { class: 'grid' }, section('Message rates', rateChart.el), section('Queued messages', msgChart.el)),
    h('div', { class: 'grid' }, section('Nodes', nodes), section('Listeners', listeners)),
  );

  async function refresh() {
    const [ov, ns] = await Promise.all([api.get('/api/overview'), api.get('/api/nodes').catch(() => null)]);
    const now = Date.now();
    const o = ov.object_totals || {};
    replace(
      stats,
      ['connections', 'channels', 'queues', 'consumers', 'exchanges'].map((k) =>
        h('a', { class: 'stat', href: `#/${k}`, dataset: { stat: k } }, h('span', { class: 'stat-value' }, num(o[k] ?? 0)), h('span', { class: 'stat-label' }, k)),
      ),
    );
    const ms = ov.message_stats || {};
    const prev = history.prev;
    const dt = prev ? (now - prev.t) / 1000 : 0;
    rateChart.push(now, rates(prev && prev.stats, ms, dt, RATE_KEYS));
    history.prev = { t: now, stats: ms };
    const qt = ov.queue_totals || {};
    msgChart.push(now, [qt.messages_ready || 0, qt.messages_unacknowledged || 0, qt.messages || 0]);
    drawNodes(nodes, ns);
    drawListeners(listeners, ov.listeners || []);
  }
  await refresh();
  return { refresh };
}

function drawNodes(el, ns) {
  if (!ns) {
    replace(el, h('p', { class: 'muted' }, 'Node details need the monitoring or administrator tag.'));
    return;
  }
  replace(
    el,
    ns.map((n) => {
      const memFrac = n.mem_limit ? n.mem_used / n.mem_limit : 0;
      const diskKnown = n.disk_free !== null && n.disk_free !== undefined;
      return h(
        'div',
        { class: 'node', dataset: { node: n.name } },
        h('h3', {}, `${n.name}${n.running === false ? ' (down)' : ''}${n.uptime ? ` · up ${duration(n.uptime)}` : ''}`),
        n.mem_used === undefined
          ? null
          : [
              h('div', {}, `Memory ${bytes(n.mem_used)} of ${bytes(n.mem_limit)} high watermark${n.mem_alarm ? ' · ALARM' : ''}`),
              meter(memFrac, n.mem_alarm),
            ],
        diskKnown
          ? [
              h('div', {}, `Disk free ${bytes(n.disk_free)}, alarm below ${bytes(n.disk_free_limit)}${n.disk_free_alarm ? ' · ALARM' : ''}`),
              meter(n.disk_free ? Math.min(1, n.disk_free_limit / n.disk_free) : 1, n.disk_free_alarm),
            ]
          : n.mem_used === undefined
            ? null
            : h('div', { class: 'muted' }, 'Disk free: not measured'),
        n.fd_used === undefined ? null : h('div', { class: 'muted' }, `File descriptors ${num(n.fd_used)} / ${num(n.fd_total)} · sockets ${num(n.sockets_used)} / ${num(n.sockets_total)}`),
      );
    }),
  );
}

/** A bar filled to `frac` (of the alarm limit): orange past 80 %, red in alarm. */
function meter(frac, alarm) {
  const fill = h('div', { class: `meter-fill${alarm ? ' alarm' : frac > 0.8 ? ' warn' : ''}` });
  fill.style.width = `${Math.max(0, Math.min(1, frac)) * 100}%`;
  return h('div', { class: 'meter', title: `${Math.round(frac * 100)}% of the limit` }, fill);
}

function drawListeners(el, ls) {
  replace(
    el,
    h(
      'table',
      { class: 'list' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Protocol'), h('th', {}, 'Node'), h('th', {}, 'Address'), h('th', {}, 'Port'))),
      h('tbody', {}, ls.map((l) => h('tr', {}, h('td', {}, l.protocol), h('td', {}, l.node), h('td', {}, l.ip_address), h('td', {}, String(l.port))))),
    ),
  );
}
