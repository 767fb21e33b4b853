// The management API from the browser: every request carries the session's Basic
// credentials (kept in sessionStorage only: gone when the tab closes, never in a URL or
// localStorage) and `X-Requested-With: XMLHttpRequest` (so a 401 brings no browser login
// dialog, and the server can tell the UI's calls). Bodies are JSON with
// `Content-Type: application/json`, the only kind the API accepts for changes (CSRF:
// a cross-site form cannot send it). A failed call throws an ApiError carrying the API's
// own `reason` text, which the pages show as it is.

const KEY = 'broker.credentials';

/** An API failure: HTTP status, RabbitMQ's `error` word and its `reason` text. */
export class ApiError extends Error {
  constructor(status, error, reason) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
    this.reason = reason;
  }
}

/** Keeps the credentials for this tab's session. */
export function setCredentials(user, password) {
  sessionStorage.setItem(KEY, btoa(unescape(encodeURIComponent(`${user}:${password}`))));
}

/** Forgets the credentials (logout). */
export function clearCredentials() {
  sessionStorage.removeItem(KEY);
}

/** Whether credentials are kept for this session. */
export function hasCredentials() {
  return sessionStorage.getItem(KEY) !== null;
}

let onUnauthorised = () => {};
/** Called when the API answers 401 "not_authorized" (the credentials no longer work). */
export function setUnauthorisedHandler(fn) {
  onUnauthorised = fn;
}

/** One path segment, encoded (a vhost "/" is "%2F"). */
export function seg(s) {
  return encodeURIComponent(s);
}

/** A path from segments: path('queues', vhost, name) → "/api/queues/%2F/name". */
export function path(...parts) {
  return '/api/' + parts.map(seg).join('/');
}

/** A query string from an object, skipping null, undefined and '' values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * Calls the API. `url` starts with /api; `body` (if any) is sent as JSON. Returns the
 * parsed JSON answer (null for 204/empty). Throws ApiError with the API's reason.
 * `extra` adds request headers (never the auth or X-Requested-With ones).
 */
export async function request(method, url, body, extra) {
  const headers = { ...(extra || {}), 'X-Requested-With': 'XMLHttpRequest', Accept: 'application/json' };
  const cred = sessionStorage.getItem(KEY);
  if (cred) headers.Authorization = `Basic ${cred}`;
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 'network', `The broker cannot be reached (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const error = data && data.error ? data.error : `HTTP ${res.status}`;
    const reason = data && data.reason ? String(data.reason) : text || res.statusText;
    const err = new ApiError(res.status, error, reason);
    if (res.status === 401 && error === 'not_authorized') onUnauthorised(err);
    throw err;
  }
  return data;
}

/** GET. */
export const get = (url) => request('GET', url);
/** PUT with a JSON body. */
export const put = (url, body) => request('PUT', url, body === undefined ? {} : body);
/** POST with a JSON body. */
export const post = (url, body) => request('POST', url, body === undefined ? {} : body);
/** DELETE (no body); `headers` adds request headers (X-Reason when closing a connection). */
export const del = (url, headers) => request('DELETE', url, undefined, headers);
