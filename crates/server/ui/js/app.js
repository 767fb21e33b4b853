// The app shell: login form, nav bar (pages the user's tags open), user and tags, logout,
// and the page lifecycle: on each hash change the current page is unmounted (its
// refresh timer stopped) and the new page's module is loaded and mounted; while a page
// is visible its refresh() runs every 5 s (skipped while the tab is hidden or the
// previous refresh still runs).

import * as api from './api.js';
import { h, replace, show } from './dom.js';
import { routes } from './routes.js';
import { allowed, current, href, navigate } from './router.js';
import { clearBanner, showError } from './ui.js';

const REFRESH_MS = 5000;

let me = null; // {name, tags}
let page = null; // the mounted page: {refresh?, unmount?}
let timer = null;
let generation = 0;

const view = () => document.getElementById('view');

function start() {
  // the credentials stopped working (password changed, user deleted): back to the login
  // form; not while logging in, where the form shows the API's reason itself
  api.setUnauthorisedHandler((err) => {
    if (me) logout(`${err.reason} — log in again.`);
  });
  document.getElementById('logout').addEventListener('click', () => logout());
  window.addEventListener('hashchange', () => {
    if (me) render();
  });
  if (api.hasCredentials()) {
    api.get('/api/whoami').then(loggedIn, () => {
      api.clearCredentials();
      loginForm();
    });
  } else {
    loginForm();
  }
}

function loginForm(message) {
  stopPage();
  me = null;
  show(document.getElementById('top'), false);
  clearBanner();
  const user = h('input', { type: 'text', name: 'username', id: 'login-user', autocomplete: 'username', required: true });
  const pass = h('input', { type: 'password', name: 'password', id: 'login-password', autocomplete: 'current-password' });
  const error = h('p', { class: 'login-error', id: 'login-error', role: 'alert' }, message || '');
  const submit = h('button', { type: 'submit', id: 'login-submit' }, 'Log in');
  const form = h(
    'form',
    { class: 'login', id: 'login-form' },
    h('h1', {}, 'Broker management'),
    h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Username'), user),
    h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Password'), pass),
    submit,
    error,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.textContent = '';
    api.setCredentials(user.value, pass.value);
    try {
      loggedIn(await api.get('/api/whoami'));
    } catch (err) {
      api.clearCredentials();
      error.textContent = err.reason || err.message;
      submit.disabled = false;
    }
  });
  replace(view(), form);
  user.focus();
}

function loggedIn(who) {
  me = { name: who.name, tags: Array.isArray(who.tags) ? who.tags : String(who.tags || '').split(',').filter(Boolean) };
  document.getElementById('who-name').textContent = me.name;
  document.getElementById('who-tags').textContent = me.tags.length ? `(${me.tags.join(', ')})` : '';
  const nav = document.getElementById('nav');
  replace(nav, routes.filter((r) => r.nav && allowed(r, me.tags)).map((r) => h('a', { href: r.path ? href(...r.path.split('/')) : '#/', dataset: { path: r.path } }, r.nav)));
  show(document.getElementById('top'), true);
  render();
}

function logout(message) {
  api.clearCredentials();
  if (location.hash && location.hash !== '#/') history.replaceState(null, '', '#/');
  loginForm(message);
}

function stopPage() {
  clearInterval(timer);
  timer = null;
  if (page && page.unmount) {
    try {
      page.unmount();
    } catch (e) {
      console.error(e);
    }
  }
  page = null;
}

async function render() {
  const mine = ++generation;
  stopPage();
  clearBanner();
  const { route, params, query } = current();
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', !!route && (route.path === a.dataset.path || (a.dataset.path && route.path.startsWith(`${a.dataset.path}/`))));
  }
  const root = h('div', { class: 'page' });
  replace(view(), root);
  if (!route) {
    replace(root, h('h1', {}, 'Not found'), h('p', {}, 'No page has this address. '), h('a', { href: '#/' }, 'Overview'));
    return;
  }
  if (!allowed(route, me.tags)) {
    replace(root, h('h1', {}, route.title), h('p', {}, `This page is for users tagged ${route.tags.join(' or ')}.`));
    return;
  }
  document.title = `${route.title} · Broker`;
  let mod;
  try {
    mod = await import(`./${route.module}`);
  } catch (e) {
    showError(e);
    return;
  }
  if (mine !== generation) return;
  const ctx = { params, query, user: me, isAdmin: me.tags.includes('administrator'), navigate, href };
  try {
    page = (await mod.render(root, ctx)) || {};
  } catch (e) {
    showError(e);
    page = {};
  }
  if (mine !== generation) {
    if (page.unmount) page.unmount();
    return;
  }
  if (page.refresh) {
    let busy = false;
    timer = setInterval(async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        await page.refresh();
      } catch (e) {
        showError(e);
      } finally {
        busy = false;
      }
    }, REFRESH_MS);
  }
}

start();
