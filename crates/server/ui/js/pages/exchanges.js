// The exchanges list (`#/exchanges`): paged, sorted and filtered by the server (the API's
// `page`, `page_size`, `name`, `use_regex`, `sort`, `sort_reverse`), with type, feature
// badges and policy (the API keeps no per-exchange message rates yet); and the form that
// declares an exchange (vhost, name, a type from /api/overview's `exchange_types`,
// durability, auto-delete, internal, typed arguments).

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { argsEditor, heading, labelled, section, select, showError, table } from '../ui.js';
import { actionForm, vhostSelect } from '../lists.js';

/** The exchange's name as shown: the default exchange has none. */
export function exchangeLabel(name) {
  return name === '' ? '(AMQP default)' : name;
}

/** Feature badges: D durable, AD auto-delete, I internal, Args. */
export function exchangeFeatures(x) {
  const out = [];
  const badge = (label, title) => h('span', { class: 'feature', title }, label);
  if (x.durable) out.push(badge('D', 'durable'));
  if (x.auto_delete) out.push(badge('AD', 'auto-delete'));
  if (x.internal) out.push(badge('I', 'internal'));
  const args = x.arguments || {};
  const keys = Object.keys(args);
  if (keys.length) out.push(badge('Args', keys.map((k) => `${k}: ${JSON.stringify(args[k])}`).join('\n')));
  return out;
}

/** Draws the exchanges page. */
export async function render(root) {
  const t = table({
    id: 'exchanges',
    columns: [
      { label: 'Name', sort: 'name', cls: 'wrap', value: (x) => h('a', { href: href('exchanges', x.vhost, x.name === '' ? 'amq.default' : x.name), 'data-exchange': x.name }, exchangeLabel(x.name)) },
      { label: 'Vhost', sort: 'vhost' },
      { label: 'Type', sort: 'type' },
      { label: 'Features', value: exchangeFeatures },
      { label: 'Policy', sort: 'policy', value: (x) => x.policy || '' },
    ],
    load: (params) => api.get('/api/exchanges' + api.query(params)),
    empty: 'No exchanges.',
  });
  const formSlot = h('div');
  replace(root, heading('Exchanges'), section('All exchanges', t.el), formSlot);
  const shown = t.refresh();
  replace(formSlot, await declareForm(() => t.refresh()));
  await shown.catch(showError);
  return { refresh: t.refresh };
}

const DEFAULT_TYPES = ['direct', 'fanout', 'topic', 'headers'];

async function exchangeTypes() {
  try {
    const o = await api.get('/api/overview');
    const types = (o.exchange_types || []).map((x) => (typeof x === 'string' ? x : x.name)).filter(Boolean);
    return types.length ? types : DEFAULT_TYPES;
  } catch {
    return DEFAULT_TYPES;
  }
}

async function declareForm(done) {
  const [vhost, types] = await Promise.all([vhostSelect('declare-vhost'), exchangeTypes()]);
  const name = h('input', { type: 'text', required: true, 'data-role': 'declare-name' });
  const type = select(types, types.includes('direct') ? 'direct' : types[0], { 'data-role': 'declare-type' });
  const durable = select([['true', 'Durable'], ['false', 'Transient']], 'true', { 'data-role': 'declare-durable' });
  const autoDelete = select([['false', 'No'], ['true', 'Yes']], 'false', { 'data-role': 'declare-auto-delete' });
  const internal = select([['false', 'No'], ['true', 'Yes']], 'false', { 'data-role': 'declare-internal' });
  const args = argsEditor('Arguments');
  const form = actionForm(
    'declare-exchange',
    [h('div', { class: 'form-row' }, labelled('Virtual host', vhost), labelled('Name', name), labelled('Type', type),
      labelled('Durability', durable), labelled('Auto delete', autoDelete), labelled('Internal', internal)), args.el],
    'Add exchange',
    async () => {
      await api.put(api.path('exchanges', vhost.value, name.value), {
        type: type.value, durable: durable.value === 'true', auto_delete: autoDelete.value === 'true',
        internal: internal.value === 'true', arguments: args.value(),
      });
      const declared = name.value;
      name.value = '';
      await done();
      return `Exchange ${declared} declared.`;
    },
  );
  return section('Add an exchange', form);
}
