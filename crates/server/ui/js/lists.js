// Small pieces shared by the exchange, connection, channel, consumer and admin pages:
// a plain list table for small lists that need no paging (bindings, a user's
// permissions), the vhost choice of a form, a "delete with confirmation"
// button and a form that runs its action through `act`.

import * as api from './api.js';
import { h, replace } from './dom.js';
import { act, confirmDialog, select, showNotice } from './ui.js';

/** A table of rows built by the caller (arrays of cells), with a text when empty. */
export function listTable(heads, rows, empty, attrs) {
  return h(
    'table',
    { class: 'list', ...(attrs || {}) },
    h('thead', {}, h('tr', {}, heads.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows.length
      ? rows.map((cells) => (cells instanceof Node ? cells : h('tr', {}, cells.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : h('td', {}, c))))))
      : h('tr', { class: 'empty' }, h('td', { colspan: String(heads.length) }, empty))),
  );
}

/** The vhost names the user sees (['/'] when the list cannot be read). */
export async function vhostNames() {
  try {
    return (await api.get('/api/vhosts')).map((v) => v.name).sort();
  } catch {
    return ['/'];
  }
}

/** A <select> of the vhosts, '/' chosen when present. */
export async function vhostSelect(role) {
  const names = await vhostNames();
  return select(names, names.includes('/') ? '/' : names[0], { 'data-role': role });
}

/**
 * A button that asks `question` and then runs `fn` (an API call), showing `done` on
 * success and the API's reason on failure; `after` runs on success (a refresh).
 */
export function dangerButton(label, role, question, fn, done, after) {
  const b = h('button', { type: 'button', class: 'danger', 'data-role': role }, label);
  b.addEventListener('click', async () => {
    if (!(await confirmDialog(question, label))) return;
    const ok = await act(b, async () => {
      await fn();
      return true;
    });
    if (ok) {
      if (done) showNotice(done);
      if (after) await Promise.resolve(after()).catch(() => {});
    }
  });
  return b;
}

/**
 * A form whose submit runs `fn` through `act` (the button disabled meanwhile, the API's
 * reason in the banner on failure). `fn` returns a notice text to show, or nothing.
 */
export function actionForm(role, children, submitLabel, fn) {
  const submit = h('button', { type: 'submit', class: 'primary', 'data-role': `${role}-submit` }, submitLabel);
  const form = h('form', { 'data-role': role }, children, submit);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(submit, async () => {
      const notice = await fn();
      if (notice) showNotice(notice);
    });
  });
  return form;
}

/** Replaces `el`'s content with a list table (a refresh of a small list). */
export function drawList(el, heads, rows, empty, attrs) {
  replace(el, listTable(heads, rows, empty, attrs));
}

/** Tags as the API gives them (a list, or a comma-separated string) → a list. */
export function tagList(tags) {
  if (Array.isArray(tags)) return tags;
  return String(tags || '').split(',').map((t) => t.trim()).filter(Boolean);
}
