// Policies (`#/policies`, administrators and policymakers) and, through the same code,
// operator policies (`#/operator-policies`, administrators): the list (vhost, name,
// pattern, apply-to, priority, definition) with edit and delete (confirmation), and the
// add/update form whose definition is typed key/values (a number stays a number, as
// `max-length` needs). PUT /api/{policies|operator-policies}/{vhost}/{name}.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { value as fmtValue } from '../fmt.js';
import { argsEditor, heading, labelled, section, select, table } from '../ui.js';
import { actionForm, dangerButton, vhostSelect } from '../lists.js';

const APPLY_TO = [['all', 'Exchanges and queues'], ['exchanges', 'Exchanges'], ['queues', 'Queues (all types)'],
  ['classic_queues', 'Classic queues'], ['quorum_queues', 'Quorum queues'], ['streams', 'Streams']];

/** Draws a policies page: `base` is 'policies' or 'operator-policies'. */
export async function policyPage(root, base, title) {
  const what = base === 'policies' ? 'policy' : 'operator policy';
  let form;
  const t = table({
    id: base,
    columns: [
      { label: 'Virtual host', sort: 'vhost' },
      { label: 'Name', sort: 'name', cls: 'wrap', value: (p) => h('span', { 'data-policy': p.name }, p.name) },
      { label: 'Pattern', sort: 'pattern', cls: 'wrap' },
      { label: 'Apply to', sort: 'apply-to' },
      { label: 'Priority', sort: 'priority', cls: 'num' },
      { label: 'Definition', cls: 'wrap', value: (p) => fmtValue(p.definition) },
      { label: '', value: (p) => h('span', { class: 'buttons' },
        h('button', { type: 'button', 'data-role': 'edit-policy', onclick: () => form.edit(p) }, 'Edit'),
        dangerButton('Delete', 'delete-policy', `Delete ${what} ${p.name} in ${p.vhost}?`, () => api.del(api.path(base, p.vhost, p.name)), `The ${what} ${p.name} is deleted.`, () => t.refresh())) },
    ],
    load: () => api.get(`/api/${base}`),
    empty: `No ${what === 'policy' ? 'policies' : 'operator policies'}.`,
  });
  form = await policyForm(base, what, () => t.refresh());
  replace(root, heading(title), section(`All ${title.toLowerCase()}`, t.el), section(`Add or update a ${what}`, form.el));
  await t.refresh();
  return { refresh: t.refresh };
}

async function policyForm(base, what, done) {
  const vhost = await vhostSelect('policy-vhost');
  const name = h('input', { type: 'text', required: true, 'data-role': 'policy-name' });
  const pattern = h('input', { type: 'text', required: true, 'data-role': 'policy-pattern', placeholder: '^amq\\.' });
  const applyTo = select(APPLY_TO, 'all', { 'data-role': 'policy-apply-to' });
  const priority = h('input', { type: 'number', value: '0', step: '1', 'data-role': 'policy-priority' });
  const definition = argsEditor('Definition');
  const el = actionForm('policy', [
    h('div', { class: 'form-row' }, labelled('Virtual host', vhost), labelled('Name', name), labelled('Pattern', pattern), labelled('Apply to', applyTo), labelled('Priority', priority)),
    definition.el,
  ], `Add / update ${what}`, async () => {
    const prio = Number(priority.value || 0);
    if (!Number.isInteger(prio)) throw new Error('The priority is a whole number.');
    await api.put(api.path(base, vhost.value, name.value), { pattern: pattern.value, 'apply-to': applyTo.value, priority: prio, definition: definition.value() });
    await done();
    return `The ${what} ${name.value} is set.`;
  });
  /** Fills the form from an existing policy (to update it). */
  function edit(p) {
    vhost.value = p.vhost;
    name.value = p.name;
    pattern.value = p.pattern;
    applyTo.value = p['apply-to'];
    priority.value = String(p.priority ?? 0);
    definition.set(p.definition);
    el.scrollIntoView({ block: 'nearest' });
  }
  return { el, edit };
}

/** Draws the policies page. */
export function render(root) {
  return policyPage(root, 'policies', 'Policies');
}
