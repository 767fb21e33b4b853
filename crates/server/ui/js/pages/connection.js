// One connection's page (`#/connections/{name}`): its details, client properties
// (capabilities included), its channels, and "close with a reason": DELETE
// /api/connections/{name} with the reason in the `X-Reason` header, which the client
// receives in its connection.close (320 CONNECTION_FORCED), as RabbitMQ does.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { duration, num, value as fmtValue } from '../fmt.js';
import { act, confirmDialog, heading, kvTable, labelled, section, showError, showNotice } from '../ui.js';
import { drawList } from '../lists.js';
import { client, tls } from './connections.js';
import { channelRow, CHANNEL_HEADS } from './channels.js';

/** Draws the connection page. */
export async function render(root, ctx) {
  const { name } = ctx.params;
  const cpath = api.path('connections', name);
  const details = h('div', { 'data-role': 'details' });
  const props = h('div', { 'data-role': 'client-properties' });
  const channels = h('div', { 'data-role': 'channels' });
  const gone = h('p', { class: 'muted hidden', 'data-role': 'gone' }, 'This connection is closed.');
  replace(
    root,
    heading(`Connection ${name}`),
    gone,
    h('div', { class: 'grid' }, section('Details', details), section('Client properties', props)),
    section('Channels', channels),
    section('Close this connection', closeForm(name, cpath, ctx)),
  );

  async function refresh() {
    let c;
    try {
      c = await api.get(cpath);
    } catch (e) {
      if (e.status === 404) {
        gone.classList.remove('hidden');
        return;
      }
      throw e;
    }
    const chs = await api.get(`${cpath}/channels`).catch(() => []);
    replace(details, kvTable(c, [
      ['user', 'User'], ['vhost', 'Virtual host', (v) => h('a', { href: href('vhosts', v) }, v)],
      ['user_provided_name', 'Client-provided name'], ['node', 'Node'], ['state', 'State'],
      ['protocol', 'Protocol'], ['auth_mechanism', 'Authentication'], ['ssl', 'TLS', () => tls(c)],
      ['peer_host', 'Peer', () => `${c.peer_host}:${c.peer_port}`], ['host', 'Local', () => `${c.host}:${c.port}`],
      ['client_properties', 'Client', () => client(c)],
      ['channels', 'Channels', num], ['frame_max', 'Frame max', num], ['timeout', 'Heartbeat (s)', num],
      ['connected_at', 'Connected', (v) => (v ? `${new Date(v).toLocaleString()} (${duration(Date.now() - v)} ago)` : '')],
    ]));
    const cp = { ...(c.client_properties || {}) };
    const caps = cp.capabilities;
    delete cp.capabilities;
    replace(props, plainKv(cp), caps ? h('div', {}, h('h3', {}, 'Capabilities'), plainKv(caps)) : null);
    drawList(channels, CHANNEL_HEADS, chs.map(channelRow), 'No channels.');
  }

  await refresh();
  return { refresh };
}

/** A key/value table whose keys are taken as they are (`basic.nack` is one key, not a path). */
function plainKv(obj) {
  return h('table', { class: 'kv' }, h('tbody', {}, Object.keys(obj).sort().map((k) => h('tr', {}, h('th', {}, k), h('td', {}, fmtValue(obj[k]))))));
}

function closeForm(name, cpath, ctx) {
  const reason = h('input', { type: 'text', value: 'Closed via management plugin', 'data-role': 'close-reason', size: '50', maxlength: '200' });
  const submit = h('button', { type: 'submit', class: 'danger', 'data-role': 'close-submit' }, 'Force close');
  const form = h('form', { 'data-role': 'close' }, h('div', { class: 'form-row' }, labelled('Reason', reason), submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    // a header carries Latin-1 only: say so here rather than let fetch fail obscurely
    if (/[^\x20-\x7e\xa0-\xff]/.test(reason.value)) {
      showError(new Error('The reason must be printable Latin-1 text (it travels in the X-Reason header).'));
      return;
    }
    if (!(await confirmDialog(`Close connection ${name}? The client is told: "${reason.value}".`, 'Close'))) return;
    await act(submit, async () => {
      await api.del(cpath, { 'X-Reason': reason.value });
      showNotice(`Connection ${name} closed.`);
      ctx.navigate(href('connections'));
    });
  });
  return form;
}
