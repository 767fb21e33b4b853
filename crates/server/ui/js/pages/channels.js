// The channels list (`#/channels`): paged, sorted and filtered (by the server when the API
// pages /api/channels, else here), with its connection, user, vhost, mode (confirm or
// transactional), prefetch, unacked messages and consumers. A row's "details" shows the
// channel as /api/channels/{name} answers it, with the consumers on it.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num, value as fmtValue } from '../fmt.js';
import { act, heading, kvTable, section, table } from '../ui.js';
import { listTable } from '../lists.js';

/** RabbitMQ's mode letters: C confirm, T transactional. */
export function mode(c) {
  return [c.confirm ? 'C' : '', c.transactional ? 'T' : ''].join('');
}

/** The heads of `channelRow` (the connection page's channel list). */
export const CHANNEL_HEADS = ['Channel', 'Mode', 'Prefetch', 'Unacked', 'Consumers', 'State'];

/** One channel as a list row (the connection page). */
export function channelRow(c) {
  return [String(c.number ?? c.name), mode(c), num(c.prefetch_count), num(c.messages_unacknowledged), num(c.consumer_count), c.state || ''];
}

/** Draws the channels page. */
export async function render(root) {
  const detail = h('div', { 'data-role': 'channel-detail' });
  const t = table({
    id: 'channels',
    columns: [
      { label: 'Channel', sort: 'name', cls: 'wrap', value: (c) => h('button', { type: 'button', class: 'link', 'data-channel': c.name, onclick: (e) => act(e.target, () => showChannel(detail, c.name)) }, c.name) },
      { label: 'Connection', sort: 'connection_details.name', cls: 'wrap', value: (c) => (c.connection_details ? h('a', { href: href('connections', c.connection_details.name) }, c.connection_details.name) : '') },
      { label: 'User', sort: 'user' },
      { label: 'Vhost', sort: 'vhost' },
      { label: 'Mode', title: 'C: confirm, T: transactional', value: mode },
      { label: 'Prefetch', sort: 'prefetch_count', cls: 'num', value: (c) => num(c.prefetch_count) },
      { label: 'Unacked', sort: 'messages_unacknowledged', cls: 'num', value: (c) => num(c.messages_unacknowledged) },
      { label: 'Consumers', sort: 'consumer_count', cls: 'num', value: (c) => num(c.consumer_count) },
      { label: 'State', sort: 'state' },
    ],
    load: (params) => api.get('/api/channels' + api.query(params)),
    empty: 'No channels.',
  });
  replace(root, heading('Channels'), section('All channels', t.el), detail);
  await t.refresh();
  return { refresh: t.refresh };
}

/** The channel's details and its consumers, in `el`. */
async function showChannel(el, name) {
  const [c, cs] = await Promise.all([api.get(api.path('channels', name)), api.get('/api/consumers').catch(() => [])]);
  const mine = cs.filter((x) => x.channel_details && x.channel_details.name === name);
  replace(el, section(`Channel ${name}`,
    kvTable(c, [
      ['connection_details.name', 'Connection'], ['number', 'Number', num], ['user', 'User'], ['vhost', 'Virtual host'],
      ['state', 'State'], ['prefetch_count', 'Prefetch', num], ['messages_unacknowledged', 'Unacked', num],
      ['confirm', 'Confirm mode', fmtValue], ['transactional', 'Transactional', fmtValue], ['consumer_count', 'Consumers', num],
    ]),
    h('h3', {}, 'Consumers'),
    listTable(['Queue', 'Consumer tag', 'Ack required', 'Prefetch', 'Arguments'], mine.map((x) => [
      h('a', { href: href('queues', x.queue.vhost, x.queue.name) }, x.queue.name), x.consumer_tag, fmtValue(x.ack_required), num(x.prefetch_count), fmtValue(x.arguments),
    ]), 'No consumers.')));
}
