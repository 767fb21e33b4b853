// Hash routing: `#/queues/%2F/name?x=1` → the route of routes.js whose pattern matches the
// decoded segments, its params and the query. The shell listens for changes; pages
// link with `href(...)` so every segment is encoded once.

import { routes } from './routes.js';

/** The hash for a page: href('queues', '/', 'q 1') → "#/queues/%2F/q%201". */
export function href(...segments) {
  return '#/' + segments.map((s) => encodeURIComponent(s)).join('/');
}

/** Goes to a page (a hash made by `href`). */
export function navigate(hash) {
  if (location.hash === hash) {
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else {
    location.hash = hash;
  }
}

/** The current location: {route, params, query} (route null when nothing matches). */
export function current() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [p, q] = raw.split('?', 2);
  const segs = p === '' ? [] : p.split('/');
  let decoded;
  try {
    decoded = segs.map((s) => decodeURIComponent(s));
  } catch {
    return { route: null, params: {}, query: new URLSearchParams() };
  }
  const query = new URLSearchParams(q || '');
  for (const route of routes) {
    const pat = route.path === '' ? [] : route.path.split('/');
    if (pat.length !== decoded.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < pat.length && ok; i++) {
      if (pat[i].startsWith(':')) params[pat[i].slice(1)] = decoded[i];
      else ok = pat[i] === decoded[i];
    }
    if (ok) return { route, params, query };
  }
  return { route: null, params: {}, query };
}

/** Whether a user with `tags` may open `route`. */
export function allowed(route, tags) {
  return !route.tags || route.tags.some((t) => tags.includes(t));
}
