// Messages on screen and the publish form, shared by the queue page (browse, get) and
// the exchange page (publish): one message's routing, properties, headers and body, the
// body switchable between text, pretty JSON and a hex dump. Bodies and headers are shown
// as text only (textContent), whatever they hold.

import * as api from './api.js';
import { h, replace } from './dom.js';
import { bytes, num } from './fmt.js';
import { act, argsEditor, kvTable, labelled, select, showError, showNotice } from './ui.js';

/** The body's bytes, from the API's payload and payload_encoding. */
export function payloadBytes(m) {
  if (m.payload_encoding === 'base64') {
    const bin = atob(m.payload || '');
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  return new TextEncoder().encode(m.payload || '');
}

/** The body in one of the modes: 'text', 'json' (pretty) or 'hex'. */
export function bodyAs(m, mode) {
  const raw = payloadBytes(m);
  const txt = new TextDecoder('utf-8', { fatal: false }).decode(raw);
  if (mode === 'json') {
    try {
      return JSON.stringify(JSON.parse(txt), null, 2);
    } catch (e) {
      return `(not JSON: ${e.message})`;
    }
  }
  if (mode === 'hex') return hexdump(raw);
  return txt;
}

/** Offset, 16 bytes in hex, and their printable ASCII: one line each. */
export function hexdump(raw) {
  const lines = [];
  for (let o = 0; o < raw.length; o += 16) {
    const row = raw.slice(o, o + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const asc = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${o.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${asc}`);
  }
  return lines.join('\n');
}

/** The best first mode: JSON when the body parses, text when it is text, else hex. */
function firstMode(m) {
  if (m.payload_encoding === 'base64') return 'hex';
  try {
    JSON.parse(m.payload);
    return 'json';
  } catch {
    return 'text';
  }
}

/**
 * One message as a card: position (when browsing), exchange, routing key, redelivered,
 * size, properties, headers and the body with its mode switch.
 */
export function messageView(m, label) {
  const props = { ...(m.properties || {}) };
  const headers = props.headers || null;
  delete props.headers;
  let mode = firstMode(m);
  const pre = h('pre', { class: 'payload', 'data-role': 'payload' });
  const buttons = ['text', 'json', 'hex'].map((k) =>
    h('button', { type: 'button', dataset: { mode: k }, onclick: () => setMode(k) }, k === 'json' ? 'JSON' : k[0].toUpperCase() + k.slice(1)),
  );
  function setMode(k) {
    mode = k;
    pre.textContent = bodyAs(m, k);
    for (const b of buttons) b.classList.toggle('active', b.dataset.mode === k);
  }
  setMode(mode);
  const truncated = m.payload_bytes !== undefined && payloadBytes(m).length < m.payload_bytes;
  return h(
    'div',
    { class: 'message', 'data-role': 'message' },
    h(
      'div',
      { class: 'message-head' },
      label ? h('b', {}, label) : null,
      h('span', {}, 'Exchange ', h('b', {}, m.exchange === '' ? '(AMQP default)' : m.exchange ?? '')),
      h('span', {}, 'Routing key ', h('b', {}, m.routing_key ?? '')),
      h('span', {}, 'Redelivered ', h('b', { 'data-role': 'redelivered' }, m.redelivered ? 'yes' : 'no')),
      h('span', {}, 'Size ', h('b', {}, bytes(m.payload_bytes ?? payloadBytes(m).length)), truncated ? ' (truncated)' : ''),
      h('span', { class: 'body-modes' }, buttons),
    ),
    Object.keys(props).length ? kvTable(props) : null,
    headers && Object.keys(headers).length ? h('div', { 'data-role': 'headers' }, h('h3', {}, 'Headers'), kvTable(headers)) : null,
    pre,
  );
}

const PROPERTIES = [
  'content_type', 'content_encoding', 'correlation_id', 'reply_to', 'expiration', 'message_id',
  'timestamp', 'type', 'user_id', 'app_id', 'priority',
];

/**
 * The publish form: through `exchange` of `vhost` (the default exchange with the queue's
 * name as routing key for a queue page: then `routingKey` is fixed), delivery mode,
 * headers, properties and the payload. Shows whether the message was routed.
 */
export function publishForm({ vhost, exchange, routingKey }) {
  const rk = h('input', { type: 'text', value: routingKey || '', disabled: routingKey !== undefined, 'data-role': 'publish-routing-key' });
  const mode = select([['2', '2 - Persistent'], ['1', '1 - Non-persistent']], '2', { 'data-role': 'publish-delivery-mode' });
  const headers = argsEditor('Headers');
  const propKey = select(PROPERTIES, 'content_type');
  const propVal = h('input', { type: 'text', placeholder: 'value' });
  const propList = h('div', { class: 'args-rows' });
  const props = {};
  const addProp = h('button', { type: 'button', class: 'link', onclick: () => {
    if (!propVal.value) return;
    props[propKey.value] = propKey.value === 'priority' || propKey.value === 'timestamp' ? Number(propVal.value) : propVal.value;
    propVal.value = '';
    replace(propList, Object.entries(props).map(([k, v]) => h('div', {}, `${k} = ${v} `, h('button', { type: 'button', class: 'link', onclick: (e) => { delete props[k]; e.target.parentNode.remove(); } }, 'remove'))));
  } }, '+ add');
  const payload = h('textarea', { 'data-role': 'publish-payload' });
  const encoding = select([['string', 'String'], ['base64', 'Base64']], 'string');
  const submit = h('button', { type: 'submit', class: 'primary', 'data-role': 'publish-submit' }, 'Publish message');
  const form = h(
    'form',
    { 'data-role': 'publish' },
    h('div', { class: 'form-row' }, labelled('Routing key', rk), labelled('Delivery mode', mode), labelled('Payload encoding', encoding)),
    headers.el,
    h('div', { class: 'args' }, h('span', { class: 'field-label' }, 'Properties'), h('div', { class: 'args-row' }, propKey, propVal, addProp), propList),
    labelled('Payload', payload),
    submit,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(submit, async () => {
      const properties = { ...props, delivery_mode: Number(mode.value) };
      const hd = headers.value();
      if (Object.keys(hd).length) properties.headers = hd;
      const res = await api.post(api.path('exchanges', vhost, exchange, 'publish'), {
        properties, routing_key: rk.value, payload: payload.value, payload_encoding: encoding.value,
      });
      if (res && res.routed === false) showError(new Error('Message published, but not routed.'));
      else showNotice('Message published.');
    });
  });
  return form;
}

/** "3 messages" / "1 message". */
export function count(n, what = 'message') {
  return `${num(n)} ${what}${n === 1 ? '' : 's'}`;
}
