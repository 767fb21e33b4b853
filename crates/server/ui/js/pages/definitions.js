// Definitions (`#/definitions`, administrators only). Export: GET /api/definitions (or
// /api/definitions/{vhost}) saved as a file through a Blob link (nothing leaves the
// browser). Import: a file chosen here, read in the browser, checked to be JSON and
// POSTed as JSON to /api/definitions (or …/{vhost}); the API's error text shows when it
// refuses the file.

import * as api from '../api.js';
import { h, replace } from '../dom.js';
import { num } from '../fmt.js';
import { act, heading, labelled, section, select, showNotice } from '../ui.js';
import { vhostNames } from '../lists.js';

const ALL = '';
const KINDS = ['users', 'vhosts', 'permissions', 'topic_permissions', 'policies', 'queues', 'exchanges', 'bindings'];

/** Draws the definitions page. */
export async function render(root) {
  let link = null; // the export's Blob URL, revoked when replaced or when leaving
  const vhosts = await vhostNames();
  const choices = [[ALL, 'All virtual hosts (the whole broker)'], ...vhosts.map((v) => [v, v])];
  replace(root, heading('Definitions'),
    h('div', { class: 'grid' }, section('Export definitions', exportForm(choices)), section('Import definitions', importForm(choices))));
  return { unmount: () => link && URL.revokeObjectURL(link) };

  function exportForm(opts) {
    const vhost = select(opts, ALL, { 'data-role': 'export-vhost' });
    const name = h('input', { type: 'text', value: fileName(), 'data-role': 'export-file-name', size: '40' });
    const button = h('button', { type: 'button', class: 'primary', 'data-role': 'export' }, 'Download broker definitions');
    const out = h('p', { class: 'muted', 'data-role': 'export-result' });
    button.addEventListener('click', () => act(button, async () => {
      const defs = await api.get(vhost.value === ALL ? '/api/definitions' : api.path('definitions', vhost.value));
      const blob = new Blob([JSON.stringify(defs, null, 2)], { type: 'application/json' });
      if (link) URL.revokeObjectURL(link);
      link = URL.createObjectURL(blob);
      const a = h('a', { href: link, download: name.value || fileName(), 'data-role': 'export-link' }, name.value || fileName());
      replace(out, 'Saved as ', a, ` (${summary(defs)}).`);
      a.click();
    }));
    return h('div', {}, h('div', { class: 'form-row' }, labelled('Virtual host', vhost), labelled('File name', name)), button, out);
  }
}

function fileName() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `definitions_${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}.json`;
}

/** "3 queues, 2 exchanges…" of a definitions document. */
function summary(defs) {
  return KINDS.filter((k) => Array.isArray(defs[k]) && defs[k].length).map((k) => `${num(defs[k].length)} ${k.replace('_', ' ')}`).join(', ') || 'empty';
}

function importForm(opts) {
  const vhost = select(opts, ALL, { 'data-role': 'import-vhost' });
  const file = h('input', { type: 'file', accept: '.json,application/json', 'data-role': 'import-file' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-role': 'import-submit' }, 'Upload broker definitions');
  const out = h('p', { class: 'muted', 'data-role': 'import-result' });
  const form = h('form', { 'data-role': 'import' }, h('div', { class: 'form-row' }, labelled('Virtual host', vhost), labelled('Definitions file', file)), submit, out);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(submit, async () => {
      out.textContent = '';
      const f = file.files && file.files[0];
      if (!f) throw new Error('Choose a definitions file first.');
      if (f.size > 64 * 1024 * 1024) throw new Error(`${f.name} is over 64 MiB.`);
      let defs;
      try {
        defs = JSON.parse(await f.text());
      } catch (err) {
        throw new Error(`${f.name} is not JSON: ${err.message}`);
      }
      if (!defs || typeof defs !== 'object' || Array.isArray(defs)) throw new Error(`${f.name} is not a definitions object.`);
      await api.post(vhost.value === ALL ? '/api/definitions' : api.path('definitions', vhost.value), defs);
      out.textContent = `Imported ${f.name} (${summary(defs)}).`;
      showNotice('Definitions imported.');
    });
  });
  return form;
}
