// One exchange's page (`#/exchanges/{vhost}/{name}`, the default exchange as
// `amq.default` as the API names it): details, the bindings where it is the source (add
// one to a queue or an exchange, with routing key and typed arguments; remove) and where
// it is the destination, publishing a message (shows whether it was routed), and delete
// with confirmation and RabbitMQ's if-unused option. A delayed exchange
// (`x-delayed-message`) also shows its waiting messages and when the next is due.
// Failures show the API's reason.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { href } from '../router.js';
import { num, value as fmtValue } from '../fmt.js';
import { act, argsEditor, confirmDialog, heading, kvTable, labelled, section, select, showNotice } from '../ui.js';
import { publishForm } from '../messages.js';
import { actionForm, drawList } from '../lists.js';
import { exchangeFeatures, exchangeLabel } from './exchanges.js';

/** Draws the exchange page. */
export async function render(root, ctx) {
  const { vhost } = ctx.params;
  const name = ctx.params.name === 'amq.default' ? '' : ctx.params.name;
  const apiName = name === '' ? 'amq.default' : name;
  const xpath = api.path('exchanges', vhost, apiName);
  const details = h('div', { 'data-role': 'details' });
  const source = h('div', { 'data-role': 'bindings-source' });
  const destination = h('div', { 'data-role': 'bindings-destination' });
  const isDefault = name === '';
  const amq = name.startsWith('amq.');
  const ifUnused = h('input', { type: 'checkbox', 'data-role': 'delete-if-unused' });
  const del = h('button', { type: 'button', class: 'danger', 'data-role': 'delete' }, 'Delete');
  del.addEventListener('click', async () => {
    const cond = ifUnused.checked ? ' (only if it has no bindings as a source)' : '';
    if (!(await confirmDialog(`Delete exchange ${name}${cond}?`, 'Delete'))) return;
    await act(del, async () => {
      await api.del(xpath + (ifUnused.checked ? '?if-unused=true' : ''));
      showNotice(`Exchange ${name} deleted.`);
      ctx.navigate(href('exchanges'));
    });
  });
  const deleteControls = isDefault || amq ? [] : [h('label', { class: 'inline' }, ifUnused, ' if unused'), del];
  replace(
    root,
    heading(`Exchange ${exchangeLabel(name)}`, ...deleteControls),
    h('p', { class: 'muted' }, 'Virtual host ', h('a', { href: href('vhosts', vhost) }, vhost)),
    section('Details', details),
    section('Bindings from this exchange', source, isDefault ? h('p', { class: 'muted' }, 'The default exchange is bound to every queue by its name; its bindings cannot be changed.') : bindForm(vhost, name, () => refresh())),
    section('Bindings to this exchange', destination),
    section('Publish message', publishForm({ vhost, exchange: apiName })),
  );

  async function refresh() {
    const [x, src, dst] = await Promise.all([
      api.get(xpath),
      isDefault ? [] : api.get(`${xpath}/bindings/source`),
      isDefault ? [] : api.get(`${xpath}/bindings/destination`),
    ]);
    const rows = [
      ['type', 'Type'], ['durable', 'Features', () => exchangeFeatures(x)],
      ['policy', 'Policy'], ['arguments', 'Arguments'],
    ];
    if (x.messages_delayed !== undefined) {
      rows.push(['messages_delayed', 'Delayed messages', num],
        ['next_due', 'Next due', (t) => (t ? new Date(t).toLocaleString() : 'none')]);
    }
    replace(details, kvTable(x, rows));
    drawBindings(source, src, vhost, 'destination', refresh);
    drawBindings(destination, dst, vhost, 'source', refresh);
  }

  await refresh();
  return { refresh };
}

/** The bindings table: `other` names the column that is not this exchange. */
function drawBindings(el, bs, vhost, other, refresh) {
  drawList(el, [other === 'destination' ? 'To' : 'From', 'Routing key', 'Arguments', ''], bs.map((b) => {
    const target = b[other];
    const kind = other === 'destination' ? b.destination_type : 'exchange';
    const link = kind === 'queue'
      ? h('a', { href: href('queues', vhost, target) }, `queue ${target}`)
      : h('a', { href: href('exchanges', vhost, target === '' ? 'amq.default' : target) }, `exchange ${exchangeLabel(target)}`);
    const unbind = h('button', { type: 'button', 'data-role': 'unbind', onclick: async (e) => {
      if (!(await confirmDialog(`Remove the binding from ${exchangeLabel(b.source)} to ${b.destination_type} ${b.destination} with key "${b.routing_key}"?`, 'Unbind'))) return;
      await act(e.target, async () => {
        const k = b.destination_type === 'queue' ? 'q' : 'e';
        await api.del(api.path('bindings', vhost, 'e', b.source, k, b.destination, b.properties_key));
        showNotice('Binding removed.');
        await refresh();
      });
    } }, 'Unbind');
    return [link, h('td', { class: 'wrap' }, b.routing_key), h('td', { class: 'wrap' }, fmtValue(b.arguments)), unbind];
  }), 'No bindings.');
}

function bindForm(vhost, name, done) {
  const kind = select([['q', 'To queue'], ['e', 'To exchange']], 'q', { 'data-role': 'bind-kind' });
  const dest = h('input', { type: 'text', required: true, 'data-role': 'bind-destination' });
  const rk = h('input', { type: 'text', 'data-role': 'bind-routing-key' });
  const args = argsEditor('Arguments');
  return actionForm(
    'bind',
    [h('h3', {}, 'Add a binding from this exchange'),
      h('div', { class: 'form-row' }, labelled('Destination', kind), labelled('Name', dest), labelled('Routing key', rk)), args.el],
    'Bind',
    async () => {
      await api.post(api.path('bindings', vhost, 'e', name, kind.value, dest.value), { routing_key: rk.value, arguments: args.value() });
      await done();
      return `Bound to ${kind.value === 'q' ? 'queue' : 'exchange'} ${dest.value}.`;
    },
  );
}
