// A small line chart on a canvas, written here (no library): a few series over time with
// a y axis scaled to the data, the times at both ends, and a legend with each series'
// latest value. The points live in the chart (the page keeps the chart across its 5 s
// refreshes, so the history grows client-side); at most `keep` points are kept.

import { h } from './dom.js';
import { clock } from './fmt.js';

/** The series colours, in order. */
export const PALETTE = ['#2f6fb3', '#e07b00', '#2e9d52', '#c0392b', '#8e44ad', '#7f8c8d'];

/**
 * lineChart({title, series: ['publish', 'deliver'], format: (v) => string, keep: 120, integer})
 * → {el, push(t, values), points}. `values` holds one number (or null: a gap) per series.
 */
export function lineChart(opts) {
  const keep = opts.keep || 120;
  const fmt = opts.format || ((v) => String(Math.round(v * 10) / 10));
  const points = opts.points || [];
  const canvas = h('canvas', { class: 'chart-canvas', width: '600', height: '180' });
  const legendValues = opts.series.map(() => h('span', { class: 'legend-value' }));
  const legend = h('div', { class: 'legend' }, opts.series.map((s, i) => {
    const sw = h('span', { class: 'swatch' });
    sw.style.background = PALETTE[i % PALETTE.length];
    return h('span', { class: 'legend-item' }, sw, ` ${s} `, legendValues[i]);
  }));
  const el = h('div', { class: 'chart', 'data-chart': opts.title || '' }, opts.title ? h('h3', {}, opts.title) : null, canvas, legend);

  function push(t, values) {
    points.push({ t, v: values });
    while (points.length > keep) points.shift();
    draw();
  }

  function draw() {
    const last = points[points.length - 1];
    legendValues.forEach((lv, i) => {
      const v = last ? last.v[i] : null;
      lv.textContent = v === null || v === undefined ? '' : fmt(v);
    });
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 600;
    const cssH = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(cssW * dpr)) canvas.width = Math.round(cssW * dpr);
    if (canvas.height !== Math.round(cssH * dpr)) canvas.height = Math.round(cssH * dpr);
    const g = canvas.getContext('2d');
    if (!g) return;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    const left = 64;
    const bottom = cssH - 18;
    const top = 8;
    const right = cssW - 8;
    let max = 0;
    for (const p of points) for (const v of p.v) if (v !== null && v > max) max = v;
    // counts get whole-number ticks (four steps), rates a round bound
    max = opts.integer ? Math.max(4, Math.ceil(max / 4) * 4) : niceMax(max);
    g.font = '11px sans-serif';
    g.fillStyle = '#666';
    g.strokeStyle = '#e4e4e4';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = bottom - ((bottom - top) * i) / 4;
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(right, y);
      g.stroke();
      g.textAlign = 'right';
      g.fillText(fmt((max * i) / 4), left - 6, y + 4);
    }
    if (points.length === 0) return;
    const t0 = points[0].t;
    const t1 = Math.max(last.t, t0 + 1);
    g.textAlign = 'left';
    g.fillText(clock(t0), left, cssH - 4);
    g.textAlign = 'right';
    g.fillText(clock(last.t), right, cssH - 4);
    const x = (t) => left + ((right - left) * (t - t0)) / (t1 - t0);
    const y = (v) => bottom - ((bottom - top) * v) / max;
    opts.series.forEach((_, i) => {
      g.strokeStyle = PALETTE[i % PALETTE.length];
      g.lineWidth = 2;
      g.beginPath();
      let pen = false;
      for (const p of points) {
        const v = p.v[i];
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        if (pen) g.lineTo(x(p.t), y(v));
        else g.moveTo(x(p.t), y(v));
        pen = true;
      }
      if (points.length === 1 && pen) g.lineTo(right, y(points[0].v[i]));
      g.stroke();
    });
  }

  requestAnimationFrame(draw);
  return { el, push, points, draw };
}

/** A round upper bound for the y axis: 0 → 1, 7 → 8, 130 → 150. */
function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.5, 2, 2.5, 4, 5, 8, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/**
 * Rates from cumulative counters between two polls: rates(prev, cur, keys) →
 * per-second numbers (null on the first poll or after a counter went back, a restart).
 */
export function rates(prev, cur, dtSeconds, keys) {
  return keys.map((k) => {
    if (!prev || dtSeconds <= 0) return null;
    const a = Number(prev[k] || 0);
    const b = Number(cur[k] || 0);
    return b >= a ? (b - a) / dtSeconds : null;
  });
}
