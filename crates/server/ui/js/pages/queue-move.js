// The queue page's "move messages" section: to where each message was dead-lettered from
// (its x-death header's exchange and routing key) or to another queue, up to a count, in
// batches of 100 requests to POST /api/queues/{vhost}/{name}/move, with a progress bar
// ("moved k of N") and the reason the server gave when it stopped. Not a page: queue.js
// uses it.

import * as api from '../api.js';
import { h } from '../dom.js';
import { num } from '../fmt.js';
import { act, labelled, select, showError, showNotice } from '../ui.js';

const BATCH = 100;

/** The section: {el, setReady(n), stop()}. */
export function moveSection(vhost, name, refresh) {
  let ready = 0;
  let stopRequested = false;
  let touched = false;
  const dest = select([['origin', 'Back to origin (x-death)'], ['queue', 'To another queue']], 'origin', { 'data-role': 'move-destination' });
  const target = h('input', { type: 'text', 'data-role': 'move-queue', placeholder: 'queue name', disabled: true });
  const n = h('input', { type: 'number', min: '1', max: '10000', 'data-role': 'move-count' });
  n.addEventListener('input', () => { touched = true; });
  dest.addEventListener('change', () => { target.disabled = dest.value !== 'queue'; });
  const bar = h('progress', { max: '1', value: '0', 'data-role': 'move-progress' });
  const text = h('p', { class: 'progress-text', 'data-role': 'move-status' });
  const progress = h('div', { class: 'hidden' }, bar, text);
  const start = h('button', { type: 'submit', class: 'primary', 'data-role': 'move-submit' }, 'Move messages');
  const stop = h('button', { type: 'button', class: 'hidden', 'data-role': 'move-stop', onclick: () => { stopRequested = true; } }, 'Stop');
  const form = h('form', { 'data-role': 'move' },
    h('p', { class: 'muted' }, 'Messages are taken from the head of the queue, republished (mandatory) and removed here only after their destination took them; a message that cannot go stops the move and stays.'),
    h('div', { class: 'form-row' }, labelled('Destination', dest), labelled('Queue', target), labelled('How many', n)),
    h('div', { class: 'buttons' }, start, stop), progress);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(start, run);
  });

  async function run() {
    const total = Number(n.value || ready);
    if (!Number.isInteger(total) || total < 1 || total > 10000) throw new Error('How many: a whole number from 1 to 10000');
    if (dest.value === 'queue' && !target.value) throw new Error('Name the queue to move the messages to');
    stopRequested = false;
    progress.classList.remove('hidden');
    stop.classList.remove('hidden');
    bar.max = total;
    bar.value = 0;
    let moved = 0;
    let reason = null;
    text.textContent = `moved 0 of ${num(total)}`;
    try {
      while (moved < total && !stopRequested) {
        const body = { count: Math.min(BATCH, total - moved), destination: dest.value };
        if (dest.value === 'queue') body.queue = target.value;
        let res;
        try {
          res = await api.post(`${api.path('queues', vhost, name)}/move`, body);
        } catch (e) {
          reason = e.reason || e.message;
          showError(e);
          break;
        }
        moved += res.moved;
        bar.value = moved;
        text.textContent = `moved ${num(moved)} of ${num(total)}`;
        if (res.stopped) {
          reason = res.stopped;
          break;
        }
        if (res.moved === 0 || res.remaining === 0) break;
      }
    } finally {
      stop.classList.add('hidden');
    }
    const why = reason ? ` — stopped: ${reason}` : stopRequested ? ' — stopped by you' : '';
    text.textContent = `moved ${num(moved)} of ${num(total)}${why}`;
    if (!reason) showNotice(`Moved ${num(moved)} message${moved === 1 ? '' : 's'}.`);
    touched = false;
    await refresh();
  }

  return {
    el: form,
    setReady(r) {
      ready = r;
      if (!touched) n.value = String(Math.max(1, Math.min(10000, r)));
    },
    stop() { stopRequested = true; },
  };
}
