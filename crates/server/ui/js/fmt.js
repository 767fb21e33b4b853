// Number, size, rate and time formatting for tables and charts.

/** 12345 → "12,345"; null/undefined → "". */
export function num(n) {
  if (n === null || n === undefined || n === '') return '';
  return typeof n === 'number' ? n.toLocaleString('en-US') : String(n);
}

/** A per-second rate: 0 → "0.0/s", 1234.5 → "1,234.5/s". */
export function rate(r) {
  if (r === null || r === undefined) return '';
  return `${Number(r).toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 })}/s`;
}

/** Bytes in binary units: 1536 → "1.5 KiB". */
export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** Milliseconds as "3d 4h", "5m 2s". */
export function duration(ms) {
  let s = Math.floor(Number(ms) / 1000);
  const d = Math.floor(s / 86400);
  s %= 86400;
  const hh = Math.floor(s / 3600);
  s %= 3600;
  const m = Math.floor(s / 60);
  s %= 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** A clock time "12:34:56" for chart axes. */
export function clock(t) {
  return new Date(t).toTimeString().slice(0, 8);
}

/** A value shown in a table cell: objects as compact JSON, booleans as yes/no. */
export function value(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** A dotted field of an object: field({a: {b: 1}}, 'a.b') → 1. */
export function field(obj, dotted) {
  let v = obj;
  for (const k of dotted.split('.')) {
    if (v === null || v === undefined) return undefined;
    v = v[k];
  }
  return v;
}
