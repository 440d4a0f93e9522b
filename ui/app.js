// app.js: boots the single-page app: picks the page from the URL, switches pages without a
// reload, opens the live stream, keeps the connection indicator in words, names the aqueduct
// the page shows (its node id and address), and re-renders the current page (at most once per
// frame) when the state changes.
import * as overview from './overview.js';
import * as activity from './activity.js';
import * as registry from './registry.js';
import * as fleet from './fleet.js';
import { store, onChange, connect, refreshRegistry } from './live.js';
import { h } from './dom.js';

// Page name (the URL's path) -> module. The fleet view is /nodes: /fleet is the API's JSON.
const PAGES = { overview, activity, registry, nodes: fleet };
const CONNECTION_TEXT = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  offline: 'offline, retrying',
};

const main = document.getElementById('page');
const indicator = document.getElementById('connection');
const nodeLabel = document.getElementById('node-label');
let current = null;
let scheduled = false;

// Exposed for the browser tests and for a curious operator's console.
window.thalassa = { store, renders: 0, lastRender: null, errors: [] };
window.addEventListener('error', (e) => window.thalassa.errors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.thalassa.errors.push(String(e.reason)));

function pageName() {
  const name = location.pathname.replace(/^\/+|\/+$/g, '');
  return PAGES[name] ? name : 'overview';
}

function mount() {
  if (current && current.unmount) current.unmount();
  const name = pageName();
  main.replaceChildren();
  main.dataset.page = name;
  current = PAGES[name].mount(main);
  const title = PAGES[name].title || `${name[0].toUpperCase()}${name.slice(1)}`;
  document.title = `${title} · Thalassa Aqueduct`;
  for (const link of document.querySelectorAll('nav a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  render();
}

function render() {
  scheduled = false;
  showConnection();
  showNode();
  if (current) current.update();
  window.thalassa.renders += 1;
  if (store.lastStats) window.thalassa.lastRender = { ...store.lastStats, renderedAt: Date.now() };
}

function schedule() {
  if (scheduled) return;
  scheduled = true;
  // A frame when the tab is visible; the timeout covers hidden or throttled tabs.
  requestAnimationFrame(() => scheduled && render());
  setTimeout(() => scheduled && render(), 100);
}

function showConnection() {
  const state = store.connection;
  indicator.dataset.state = state;
  // While the stream is down the page shows the last known state: dim it so it does not pass
  // for live.
  document.body.classList.toggle('stale', state === 'reconnecting' || state === 'offline');
  indicator.className = `conn conn-${state}`;
  indicator.querySelector('.text').textContent = CONNECTION_TEXT[state] || state;
  indicator.title = state === 'live' ? 'receiving live updates' : 'not receiving live updates: showing the last known state';
}

/** The header's "which aqueduct is this": node id and address, as the original showed its host. */
function showNode() {
  const node = store.node;
  // A UI served without a label (its own tests) names no node.
  const known = Boolean(node && node.id && node.address);
  nodeLabel.hidden = !known;
  if (!known) return;
  const address = String(node.address).replace(/^https?:\/\//, '');
  const signature = `${node.id} ${address} ${node.fleet}`;
  if (nodeLabel.dataset.sig === signature) return;
  nodeLabel.dataset.sig = signature;
  nodeLabel.dataset.node = node.id;
  nodeLabel.replaceChildren(node.fleet ? 'node ' : 'host ', h('strong', { class: 'mono', text: node.id }),
    ' at ', h('span', { class: 'mono', text: address }));
  nodeLabel.title = node.fleet
    ? `this page shows node ${node.id} of a fleet, at ${node.address}`
    : `this page shows the aqueduct on ${node.id}, at ${node.address} (it runs alone)`;
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-page]');
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  if (location.pathname !== link.pathname) history.pushState(null, '', link.pathname);
  mount();
});
window.addEventListener('popstate', mount);
// A drop-down kept open through updates is redrawn once it closes.
document.addEventListener('focusout', () => setTimeout(schedule, 0));
onChange(schedule);
mount();
connect();
// Version counts for the drop-downs also change without an activity this page would see
// (e.g. a registry this aqueduct does not follow): refresh them now and then while visible.
setInterval(() => { if (!document.hidden) refreshRegistry(); }, 15000);
