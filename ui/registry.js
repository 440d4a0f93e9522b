// registry.js: the Registry page. Every registration grouped by name and version, with
// host:port, its meta, when it was last seen, and a live countdown to its expiry.
import { h, reconcile, plural, duration, iso } from './dom.js';
import { store, refreshRegistry, serverNow } from './live.js';

/** The registry's idea of now: the aqueduct's clock at the last answer, advanced locally. */
function registryNow() {
  const view = store.registry;
  return view && view.now ? view.now + (Date.now() - view.receivedAt) : serverNow();
}

const REFRESH_EVERY_MS = 5000;

export function mount(main) {
  const status = h('p', { class: 'summary', id: 'registry-summary', role: 'status' });
  const problem = h('p', { class: 'problem', id: 'registry-error', role: 'alert', hidden: true });
  const groups = h('div', { class: 'groups', id: 'registry-groups' });
  main.append(h('div', { class: 'page-head' }, h('h1', { text: 'Registry' }), status), problem, groups);
  refreshRegistry();
  const poll = setInterval(refreshRegistry, REFRESH_EVERY_MS);
  const tick = setInterval(() => updateCountdowns(groups), 1000);

  function update() {
    const view = store.registry;
    problem.hidden = !store.registryError;
    problem.textContent = store.registryError ? `Registry unavailable: ${store.registryError}${view ? ' (showing the last answer)' : ''}` : '';
    if (!view) {
      status.textContent = store.registryError ? '' : 'Loading…';
      return;
    }
    if (view.warning) {
      problem.hidden = false;
      problem.textContent = view.warning;
    }
    const regs = view.registrations || [];
    const names = new Map();
    for (const r of regs) {
      if (!names.has(r.name)) names.set(r.name, new Map());
      const versions = names.get(r.name);
      if (!versions.has(r.version)) versions.set(r.version, []);
      versions.get(r.version).push(r);
    }
    status.textContent = `${plural(regs.length, 'registration')} of ${plural(names.size, 'service')}`;
    if (!regs.length) {
      reconcile(groups, [{ key: 'none', sig: '', build: () => h('p', { class: 'empty', text: 'Nothing is registered. Services register with POST /registrations/{name}/{version}/{host}/{port} on the registry.' }) }]);
    } else {
      reconcile(groups, Array.from(names, ([name, versions]) => ({
        key: `n:${name}`, sig: JSON.stringify(Array.from(versions)), build: () => group(name, versions),
      })));
    }
    updateCountdowns(groups);
  }
  return { update, unmount: () => { clearInterval(poll); clearInterval(tick); } };
}

function group(name, versions) {
  return h('section', { class: 'card service', 'data-service': name },
    h('h2', { class: 'key', text: name }),
    Array.from(versions, ([version, regs]) => h('div', { class: 'version-group', 'data-version': version },
      h('h3', null, h('span', { class: 'mono', text: `${name}@${version}` }), ' ', h('span', { class: 'muted', text: plural(regs.length, 'instance') })),
      h('ul', { class: 'registrations' }, regs.map(registration)))));
}

function registration(r) {
  const meta = r.meta && typeof r.meta === 'object' ? Object.entries(r.meta) : [];
  return h('li', { class: 'registration', 'data-id': r.id },
    h('span', { class: 'address mono', text: `${r.host}:${r.port}` }),
    h('span', { class: 'countdown', 'data-expires': r.expiresAt === null || r.expiresAt === undefined ? '' : r.expiresAt,
      'data-last-known': r.lastKnown || '' }),
    meta.length ? h('ul', { class: 'meta' }, meta.map(([k, v]) => h('li', null,
      h('span', { class: 'meta-key', text: k }), h('span', { class: 'meta-value', text: typeof v === 'string' ? v : JSON.stringify(v) })))) : null);
}

/** Rewrites only the countdown texts, once a second. */
function updateCountdowns(root) {
  const now = registryNow();
  for (const el of root.querySelectorAll('.countdown')) {
    const expires = Number(el.dataset.expires);
    const seen = Number(el.dataset.lastKnown);
    const seenText = seen ? `seen ${duration((now - seen) / 1000)} ago` : '';
    let text;
    if (!el.dataset.expires) { text = 'expiry unknown'; el.className = 'countdown tone-muted'; }
    else if (expires <= now) { text = 'expired, leaving'; el.className = 'countdown tone-bad'; }
    else {
      const left = (expires - now) / 1000;
      text = `expires in ${duration(left)}`;
      el.className = `countdown ${left < 10 ? 'tone-warn' : 'tone-ok'}`;
      el.title = `expires at ${iso(expires)}`;
    }
    el.textContent = seenText ? `${text} · ${seenText}` : text;
  }
}
