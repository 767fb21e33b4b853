// The UI's shared components: the data table (server-side paging, sorting and name
// filter through the API's `page`, `page_size`, `name`, `use_regex`, `sort`,
// `sort_reverse` parameters), the error banner (the API's reason as it is), the
// confirmation dialog for destructive actions, and form helpers (fields, typed
// arguments). Everything is built with dom.js: no markup from data.

import { h, replace, show } from './dom.js';
import { field, num, value as fmtValue } from './fmt.js';

// ---------------------------------------------------------------- banner

/** Shows an error (an ApiError's reason, or any Error's message) in the top banner. */
export function showError(err) {
  const text = err && (err.reason || err.message) ? err.reason || err.message : String(err);
  banner('error', text);
}

/** Shows a success notice in the top banner. */
export function showNotice(text) {
  banner('notice', text);
}

/** Hides the banner. */
export function clearBanner() {
  const b = document.getElementById('banner');
  if (b) show(b, false);
}

function banner(kind, text) {
  const b = document.getElementById('banner');
  if (!b) return;
  b.className = `banner ${kind}`;
  replace(
    b,
    h('span', { class: 'banner-text' }, text),
    h('button', { type: 'button', class: 'link banner-close', onclick: clearBanner, 'aria-label': 'Close' }, '×'),
  );
}

/**
 * Runs an action for a button: the button is disabled meanwhile, the banner cleared
 * before and showing the API's reason if the action fails. Returns the action's result
 * (undefined on failure).
 */
export async function act(button, fn) {
  clearBanner();
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------- confirm

/** Asks for confirmation in a modal dialog; resolves true when the user confirms. */
export function confirmDialog(message, okLabel = 'OK') {
  return new Promise((resolve) => {
    const ok = h('button', { type: 'button', class: 'danger', 'data-role': 'confirm-ok' }, okLabel);
    const cancel = h('button', { type: 'button', 'data-role': 'confirm-cancel' }, 'Cancel');
    const dlg = h('dialog', { class: 'confirm' }, h('p', {}, message), h('div', { class: 'buttons' }, cancel, ok));
    const done = (answer) => {
      dlg.close();
      dlg.remove();
      resolve(answer);
    };
    ok.addEventListener('click', () => done(true));
    cancel.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (e) => {
      e.preventDefault();
      done(false);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

// ---------------------------------------------------------------- table

const remembered = new Map();

/**
 * A data table. opts:
 * - id: remembers the table's paging, sort and filter under this key while the tab lives
 * - columns: [{label, sort (a dotted field, or none), value(row) → Node|string, cls}]
 * - load(params) → the API's page object (`items`, `page`, `page_count`,
 *   `filtered_count`, `total_count`) or a plain array (then paged here)
 * - filter (default true): the name filter and its regex checkbox
 * - pageSize (default 100), defaultSort (default 'name'), empty (text when no rows)
 * Returns {el, refresh(), state}; refresh() reloads the current page (the shell's 5 s
 * refresh calls it through the page).
 */
export function table(opts) {
  const key = opts.id || '';
  const state = remembered.get(key) || {
    page: 1,
    page_size: opts.pageSize || 100,
    name: '',
    use_regex: false,
    sort: opts.defaultSort === undefined ? 'name' : opts.defaultSort,
    sort_reverse: false,
  };
  remembered.set(key, state);
  const tbody = h('tbody');
  const heads = opts.columns.map((c) => header(c));
  const info = h('span', { class: 'count', 'data-role': 'count' });
  const pageText = h('span', { class: 'page-text' });
  const prev = h('button', { type: 'button', onclick: () => go(state.page - 1) }, '‹ Prev');
  const next = h('button', { type: 'button', onclick: () => go(state.page + 1) }, 'Next ›');
  const tools = h('div', { class: 'table-tools' });
  if (opts.filter !== false) tools.append(...filterControls());
  tools.append(pageSizeControl(), info);
  const el = h(
    'div',
    { class: 'dtable', 'data-table': key },
    tools,
    h('table', { class: 'list' }, h('thead', {}, h('tr', {}, heads)), tbody),
    h('div', { class: 'pager' }, prev, pageText, next),
  );
  let seq = 0;
  let pageCount = 1;

  function header(c) {
    const th = h('th', { class: c.sort ? 'sortable' : null, title: c.title || null }, c.label);
    if (c.sort) {
      th.addEventListener('click', () => {
        if (state.sort === c.sort) state.sort_reverse = !state.sort_reverse;
        else {
          state.sort = c.sort;
          state.sort_reverse = false;
        }
        state.page = 1;
        reload();
      });
    }
    th.dataset.sort = c.sort || '';
    return th;
  }

  function filterControls() {
    let timer = null;
    const input = h('input', { type: 'search', placeholder: 'Filter by name', value: state.name, 'data-role': 'filter' });
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        state.name = input.value;
        state.page = 1;
        reload();
      }, 250);
    });
    const regex = h('input', { type: 'checkbox', checked: state.use_regex, 'data-role': 'regex' });
    regex.addEventListener('change', () => {
      state.use_regex = regex.checked;
      state.page = 1;
      reload();
    });
    return [input, h('label', { class: 'inline' }, regex, ' Regex')];
  }

  function pageSizeControl() {
    const sel = h('select', { 'data-role': 'page-size' }, [20, 50, 100, 200, 500].map((n) => h('option', { value: String(n) }, `${n} per page`)));
    sel.value = String(state.page_size);
    sel.addEventListener('change', () => {
      state.page_size = Number(sel.value);
      state.page = 1;
      reload();
    });
    return sel;
  }

  function go(page) {
    if (page < 1 || page > pageCount) return;
    state.page = page;
    reload();
  }

  /** A reload the user asked for: a failure goes to the banner. */
  function reload() {
    clearBanner();
    refresh().catch(showError);
  }

  function drawHeads() {
    for (const th of heads) {
      const s = th.dataset.sort;
      th.classList.toggle('sorted', !!s && s === state.sort);
      th.classList.toggle('reverse', !!s && s === state.sort && state.sort_reverse);
    }
  }

  async function refresh() {
    const mine = ++seq;
    drawHeads();
    const params = {
      page: state.page,
      page_size: state.page_size,
      name: state.name,
      use_regex: state.name && state.use_regex ? 'true' : '',
      sort: state.sort,
      sort_reverse: state.sort_reverse ? 'true' : '',
    };
    let res;
    try {
      res = await opts.load(params);
    } catch (e) {
      if (mine !== seq) return;
      // a page past the last one (objects deleted meanwhile): back to the first
      if (e.status === 400 && state.page > 1) {
        state.page = 1;
        return refresh();
      }
      replace(tbody, h('tr', { class: 'error-row' }, h('td', { colspan: String(opts.columns.length) }, e.reason || e.message)));
      throw e;
    }
    if (mine !== seq) return;
    const pg = Array.isArray(res) ? localPage(res, state) : res;
    pageCount = Math.max(1, pg.page_count || 1);
    const rows = pg.items.map((row) => h('tr', {}, opts.columns.map((c) => h('td', { class: c.cls || null }, cell(c, row)))));
    if (rows.length === 0) rows.push(h('tr', { class: 'empty' }, h('td', { colspan: String(opts.columns.length) }, opts.empty || 'Nothing here.')));
    replace(tbody, rows);
    const filtered = pg.filtered_count === undefined ? pg.items.length : pg.filtered_count;
    const total = pg.total_count === undefined ? filtered : pg.total_count;
    info.textContent = filtered === total ? `${num(total)} item${total === 1 ? '' : 's'}` : `${num(filtered)} of ${num(total)} items match`;
    pageText.textContent = `Page ${num(pg.page || 1)} of ${num(pageCount)}`;
    prev.disabled = state.page <= 1;
    next.disabled = state.page >= pageCount;
  }

  return { el, refresh, state };
}

function cell(c, row) {
  if (c.value) return c.value(row);
  return fmtValue(field(row, c.sort || ''));
}

/** Pages a plain array as the API would (for endpoints answering without paging). */
export function localPage(all, state) {
  let items = all;
  if (state.name) {
    let test;
    if (state.use_regex) {
      let re;
      try {
        re = new RegExp(state.name, 'i');
      } catch (e) {
        throw Object.assign(new Error(`invalid regular expression: ${e.message}`), { status: 0 });
      }
      test = (n) => re.test(n);
    } else {
      const needle = state.name.toLowerCase();
      test = (n) => n.toLowerCase().includes(needle);
    }
    items = items.filter((r) => test(String(r.name ?? '')));
  }
  if (state.sort) {
    const k = state.sort;
    items = [...items].sort((a, b) => compare(field(a, k), field(b, k)));
    if (state.sort_reverse) items.reverse();
  }
  const size = state.page_size;
  const pageCount = Math.max(1, Math.ceil(items.length / size));
  const page = Math.min(state.page, pageCount);
  return {
    items: items.slice((page - 1) * size, page * size),
    page,
    page_count: pageCount,
    page_size: size,
    filtered_count: items.length,
    total_count: all.length,
    item_count: Math.min(size, Math.max(0, items.length - (page - 1) * size)),
  };
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === undefined || a === null) return -1;
  if (b === undefined || b === null) return 1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b));
}

// ---------------------------------------------------------------- forms and layout

/** A titled card. */
export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

/** A labelled form field around an input. */
export function labelled(label, input) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input);
}

/** A <select> of [value, label] pairs (or plain values). */
export function select(options, selected, attrs) {
  const el = h('select', attrs || {}, options.map((o) => {
    const [v, l] = Array.isArray(o) ? o : [o, o];
    return h('option', { value: v }, l);
  }));
  if (selected !== undefined) el.value = selected;
  return el;
}

/** A key/value table of an object's fields (nested objects as JSON). */
export function kvTable(obj, rows) {
  const keys = rows || Object.keys(obj || {});
  return h('table', { class: 'kv' }, h('tbody', {}, keys.map((k) => {
    const [key, label, fmt] = Array.isArray(k) ? k : [k, k, null];
    const v = field(obj || {}, key);
    return h('tr', {}, h('th', {}, label), h('td', {}, fmt ? fmt(v, obj) : fmtValue(v)));
  })));
}

/**
 * An editor of typed arguments (queue arguments, binding arguments, headers): rows of
 * key, value and type (String, Number, Boolean, List or object as JSON).
 * Returns {el, value(), set(obj)}; value() throws an Error naming a bad row; set(obj)
 * fills the rows from an object (editing an existing policy's definition).
 */
export function argsEditor(label = 'Arguments') {
  const rows = h('div', { class: 'args-rows' });
  const add = (key = '', val = '', type = 'string') => {
    const k = h('input', { type: 'text', placeholder: 'key', 'data-role': 'arg-key', value: key });
    const v = h('input', { type: 'text', placeholder: 'value', 'data-role': 'arg-value', value: val });
    const t = select([['string', 'String'], ['number', 'Number'], ['boolean', 'Boolean'], ['json', 'List/object (JSON)']], type, { 'data-role': 'arg-type' });
    const rm = h('button', { type: 'button', class: 'link', onclick: () => row.remove() }, 'remove');
    const row = h('div', { class: 'args-row' }, k, ' = ', v, t, rm);
    rows.append(row);
  };
  add();
  const el = h('div', { class: 'args' }, h('span', { class: 'field-label' }, label), rows, h('button', { type: 'button', class: 'link', 'data-role': 'arg-add', onclick: () => add() }, '+ add'));
  /** Replaces the rows with an object's entries (typed by their JSON type). */
  function set(obj) {
    rows.replaceChildren();
    for (const [k, v] of Object.entries(obj || {})) {
      const type = typeof v === 'number' ? 'number' : typeof v === 'boolean' ? 'boolean' : typeof v === 'string' ? 'string' : 'json';
      add(k, type === 'json' ? JSON.stringify(v) : String(v), type);
    }
    add();
  }
  function value() {
    const out = {};
    for (const row of rows.children) {
      const [k, v, t] = ['arg-key', 'arg-value', 'arg-type'].map((r) => row.querySelector(`[data-role="${r}"]`).value);
      if (!k) continue;
      out[k] = typed(k, v, t);
    }
    return out;
  }
  return { el, value, set };
}

function typed(key, v, type) {
  if (type === 'number') {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new Error(`argument ${key}: "${v}" is not a number`);
    return n;
  }
  if (type === 'boolean') {
    if (v !== 'true' && v !== 'false') throw new Error(`argument ${key}: a boolean is true or false`);
    return v === 'true';
  }
  if (type === 'json') {
    try {
      return JSON.parse(v);
    } catch (e) {
      throw new Error(`argument ${key}: not JSON (${e.message})`);
    }
  }
  return v;
}

/** A page heading with optional buttons on the right. */
export function heading(title, ...buttons) {
  return h('div', { class: 'heading' }, h('h1', {}, title), h('div', { class: 'buttons' }, ...buttons));
}
