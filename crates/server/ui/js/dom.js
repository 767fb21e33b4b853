// A small element builder. Text always goes in through textContent and attributes
// through setAttribute (never innerHTML), so nothing a queue name, a header or a message
// body contains can become markup or script.

/**
 * h('div', {class: 'x', onclick: fn, dataset: {k: 'v'}}, child, 'text', [more]) → Element.
 * Attributes: `class`, `on<event>` (a listener), `dataset`, booleans (true sets, false
 * or null leaves out), anything else setAttribute'd as a string. Children: Nodes, strings
 * and numbers (as text), arrays (flattened), null/undefined/false (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'checked') {
      el.checked = !!v;
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (the kinds `h` takes) to `el`. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces everything inside `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A text node. */
export const text = (s) => document.createTextNode(String(s));

/** Shows or hides an element (the `hidden` class). */
export function show(el, on) {
  el.classList.toggle('hidden', !on);
}
