// The consumers list (`#/consumers`): every consumer the user may see, with its queue,
// channel (linked to the connection), tag, ack mode, prefetch, exclusivity and
// arguments. /api/consumers answers a plain list, so the table pages, sorts and filters
// it here (the filter matches the consumer tag).

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num, value as fmtValue } from '../fmt.js';
import { heading, section, table } from '../ui.js';

/** Draws the consumers page. */
export async function render(root) {
  const t = table({
    id: 'consumers',
    defaultSort: 'queue.name',
    columns: [
      { label: 'Queue', sort: 'queue.name', cls: 'wrap', value: (c) => h('a', { href: href('queues', c.queue.vhost, c.queue.name) }, c.queue.name) },
      { label: 'Vhost', sort: 'queue.vhost' },
      { label: 'Channel', sort: 'channel_details.name', cls: 'wrap', value: (c) => (c.channel_details ? h('a', { href: href('connections', c.channel_details.connection_name || '') }, c.channel_details.name) : '') },
      { label: 'Consumer tag', sort: 'consumer_tag', cls: 'wrap' },
      { label: 'Ack mode', sort: 'ack_required', value: (c) => (c.ack_required ? 'manual ack' : 'automatic') },
      { label: 'Prefetch', sort: 'prefetch_count', cls: 'num', value: (c) => num(c.prefetch_count) },
      { label: 'Exclusive', sort: 'exclusive', value: (c) => fmtValue(c.exclusive) },
      { label: 'Active', sort: 'active', value: (c) => fmtValue(c.active) },
      { label: 'Arguments', cls: 'wrap', value: (c) => fmtValue(c.arguments) },
    ],
    // the plain list is filtered on `name`: give each consumer its tag as one
    load: async () => (await api.get('/api/consumers')).map((c) => ({ ...c, name: c.consumer_tag })),
    empty: 'No consumers.',
  });
  replace(root, heading('Consumers'), section('All consumers', t.el));
  await t.refresh();
  return { refresh: t.refresh };
}
