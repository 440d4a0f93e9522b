// overview.js: the Overview page. Per frontend: status, connections, history charts, bind,
// default backend, rules, natives, and "waiting for backend" when its backend is missing. Per
// backend: status (DOWN when no member is UP, DEGRADED while the mass-expiry brake holds expired
// members in service, with the held members and a button to confirm their removal),
// name@version with the live version switch, a rollout of a new version (progress, plan,
// decisions, each version's error rate, and its controls), healthy/total ring, charts, and every
// member with its HAProxy status and last check.
import { h, reconcile, badge, plural, num, duration, clock } from './dom.js';
import { sparkline, ring } from './charts.js';
import { store, switchVersion, confirmRemoval, rolloutAction, armAbort, disarmAbort } from './live.js';

export function mount(main) {
  const summary = h('p', { class: 'summary', id: 'summary' });
  const frontends = h('div', { class: 'cards', id: 'frontends' });
  const backends = h('div', { class: 'cards', id: 'backends' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', { text: 'Overview' }), summary),
    h('div', { class: 'columns' },
      h('section', { 'aria-labelledby': 'fe-title' }, h('h2', { id: 'fe-title', text: 'Frontends' }), frontends),
      h('section', { 'aria-labelledby': 'be-title' }, h('h2', { id: 'be-title', text: 'Backends' }), backends)));
  return { update: () => update(summary, frontends, backends) };
}

function update(summary, frontendsEl, backendsEl) {
  const config = store.config || {};
  const frontends = [...(config.frontends || [])].sort(byKey);
  const backends = [...(config.backends || [])].sort(byKey);
  const views = backends.map(backendView);
  const up = views.reduce((n, v) => n + v.healthy, 0);
  const total = views.reduce((n, v) => n + v.total, 0);
  summary.textContent = `${plural(frontends.length, 'frontend')} · ${plural(backends.length, 'backend')} · ${up} of ${plural(total, 'member')} up`;

  if (!frontends.length) empty(frontendsEl, 'No frontends yet. Create one with PUT /frontends/{key}.');
  else {
    const cards = reconcile(frontendsEl, frontends.map((f) => ({ key: `fe:${f.key}`, sig: 'card', build: () => card('frontend', f.key) })));
    frontends.forEach((f, i) => fillFrontend(cards[i], f));
  }
  if (!backends.length) empty(backendsEl, 'No backends yet. Create one with PUT /backends/{key}.');
  else {
    const cards = reconcile(backendsEl, views.map((v) => ({ key: `be:${v.backend.key}`, sig: 'card', build: () => card('backend', v.backend.key) })));
    views.forEach((v, i) => fillBackend(cards[i], v));
  }
}

function byKey(a, b) { return String(a.key) < String(b.key) ? -1 : String(a.key) > String(b.key) ? 1 : 0; }

function empty(container, text) {
  reconcile(container, [{ key: 'empty', sig: text, build: () => h('p', { class: 'empty', text }) }]);
}

function card(kind, key) {
  return h('article', { class: `card ${kind}`, [`data-${kind}`]: key });
}

// ---- frontends ------------------------------------------------------------------------------

function fillFrontend(el, f) {
  const sample = store.stats && store.stats.frontends ? store.stats.frontends[f.key] : null;
  const waitingFor = f.waitingForBackend ? (typeof f.waitingForBackend === 'string' ? f.waitingForBackend : f.backend) : null;
  const status = waitingFor ? 'WAITING' : sample ? sample.status : 'PENDING';
  const http = (f.mode || 'http') === 'http';
  // HTTP frontends count requests; TCP ones only have connections.
  const [rateColumn, rateLabel] = http ? ['reqRate', 'req/s'] : ['rate', 'conn/s'];
  reconcile(el, [
    block('head', [status, f.key, waitingFor], () => h('header', { class: 'card-head' },
      badge(status, waitingFor ? 'warn' : null),
      h('h3', { class: 'key', text: f.key }),
      waitingFor ? h('p', { class: 'waiting', role: 'note', text: `waiting for backend ${waitingFor}` }) : null)),
    block('numbers', [sample, http], () => traffic(sample, rateColumn, rateLabel)),
    block('charts', chartSig('frontends', f.key), () => charts('frontends', f.key, rateColumn, rateLabel)),
    block('facts', [f.bind, f.backend, f.mode, f.keepalive, f.rules, f.natives], () => h('dl', { class: 'facts' },
      fact('bind', f.bind),
      fact('default backend', f.backend),
      fact('mode', `${f.mode || 'http'}${f.keepalive && f.keepalive !== 'default' ? `, keepalive ${f.keepalive}` : ''}`),
      (f.rules || []).length ? fact('rules', h('ul', { class: 'plain' }, f.rules.map((r) => h('li', { class: 'mono', text: ruleText(r) })))) : null,
      (f.natives || []).length ? fact('natives', h('ul', { class: 'plain' }, f.natives.map((n) => h('li', { class: 'mono', text: String(n) })))) : null)),
  ]);
}

/** `type: operation header "value" -> backend`, as the original showed a rule. */
function ruleText(r) {
  const parts = [`${r.type || '?'}:`, r.operation || ''];
  if (r.header) parts.push(r.header);
  parts.push(JSON.stringify(r.value === undefined ? '' : String(r.value)), '→', r.backend || '?');
  return parts.filter(Boolean).join(' ');
}

/** "N connections / M max · R req/s": `rateColumn` and `rateLabel` say which rate is shown. */
function traffic(sample, rateColumn, rateLabel) {
  if (!sample) return h('p', { class: 'numbers muted', text: 'no traffic figures yet' });
  return h('p', { class: 'numbers' },
    h('strong', { text: num(sample.scur) }), ` ${sample.scur === 1 ? 'connection' : 'connections'} / `,
    h('strong', { text: num(sample.smax) }), ' max · ',
    h('strong', { text: num(sample[rateColumn]) }), ` ${rateLabel}`);
}

// ---- backends -------------------------------------------------------------------------------

/** What a backend card shows, joined from its config and the latest stats sample. */
function backendView(b) {
  const samples = (store.stats && store.stats.members && store.stats.members[b.key]) || [];
  const byAddress = new Map(samples.map((m) => [`${m.host}:${m.port}`, m]));
  const members = [];
  for (const m of b.members || []) {
    // A member registered by DNS name: its server is at the address the name resolved to.
    const address = `${m.address || m.host}:${m.port}`;
    const sample = byAddress.get(address);
    byAddress.delete(address);
    const label = m.address ? `${m.host}:${m.port} (${m.address})` : address;
    members.push({ address, label, sample, leaving: false, unresolved: m.unresolved || null });
  }
  // Servers HAProxy still has but the config does not list: leaving (draining) members, unless
  // the sample names their version (the server names it for members only; during a rollout
  // the new version's members may not be in the row's list).
  for (const [address, sample] of byAddress) members.push({ address, sample, leaving: !sample.version });
  const current = members.filter((m) => !m.leaving);
  const healthy = current.filter((m) => m.sample && String(m.sample.status).startsWith('UP')).length;
  const sample = store.stats && store.stats.backends ? store.stats.backends[b.key] : null;
  const degraded = (store.stats && store.stats.degraded && store.stats.degraded[b.key]) || null;
  const held = new Set(degraded ? degraded.held : []);
  const refused = (store.stats && store.stats.refused && store.stats.refused[b.key]) || {};
  for (const m of members) {
    m.held = held.has(m.address);
    m.refused = refused[m.address] || null;
  }
  const status = healthy === 0 ? 'DOWN' : degraded ? 'DEGRADED' : (sample && sample.status) || 'UP';
  // While two versions serve, each member says which one it runs.
  const tagVersions = rolloutActive(b.rollout);
  for (const m of members) m.version = tagVersions && m.sample ? m.sample.version || null : null;
  return { backend: b, members, healthy, total: current.length, sample, status, degraded };
}

function fillBackend(el, v) {
  const b = v.backend;
  const dynamic = b.type === 'dynamic';
  const versions = dynamic && store.registry && store.registry.versions ? store.registry.versions[b.name] || {} : {};
  const sw = store.switches[b.key] || null;
  const check = b.health ? `${b.health.method || 'GET'} ${b.health.uri || '/'} every ${num(b.health.interval || 2000)} ms` : null;
  reconcile(el, [
    block('head', [v.status, b.key, b.type, b.name, b.version, versions, sw], () => h('header', { class: 'card-head' },
      badge(v.status),
      h('h3', { class: 'key', text: b.key }),
      dynamic ? versionPicker(b, versions, sw) : h('span', { class: 'kind', text: 'static' }))),
    block('degraded', [v.degraded, store.confirms[b.key] || null], () => degradedNote(b.key, v.degraded)),
    block('rollout', [b.rollout || null, b.stickyCookie || null, store.rolloutActions[b.key] || null],
      () => rolloutNote(b)),
    block('rollout-charts', errorRateSig(b), () => errorRateCharts(b)),
    block('health', [v.healthy, v.total, v.sample], () => h('div', { class: 'health' },
      ring(v.healthy, v.total), traffic(v.sample, 'rate', 'sess/s'))),
    block('charts', chartSig('backends', b.key), () => charts('backends', b.key, 'rate', 'sess/s')),
    block('facts', [b.balance, b.mode, check, b.natives, b.host], () => h('dl', { class: 'facts' },
      fact('balance', b.balance || 'roundrobin'),
      fact('mode', b.mode || 'http'),
      check ? fact('check', check) : null,
      b.host ? fact('host', b.host) : null,
      (b.natives || []).length ? fact('natives', h('ul', { class: 'plain' }, b.natives.map((n) => h('li', { class: 'mono', text: String(n) })))) : null)),
    block('members', v.members, () => memberList(v)),
  ]);
}

/** The mass-expiry brake's mark: why, since when, who is held, and the operator's way out. */
function degradedNote(key, degraded) {
  const confirm = store.confirms[key] || null;
  if (!degraded) {
    // An empty slot keeps the card's block order stable; it shows how the last removal went.
    return h('div', { class: 'degraded-slot' },
      confirm && confirm.state !== 'pending'
        ? h('p', { class: `switch switch-${confirm.state}`, role: 'status', text: confirm.text }) : null);
  }
  const since = new Date(degraded.since).toLocaleTimeString();
  const n = degraded.held.length;
  return h('div', { class: 'degraded', role: 'alert', 'data-degraded': key },
    h('p', { class: 'degraded-title', text: `Degraded since ${since}: ${degraded.reason}.` }),
    h('p', { text: `${plural(n, 'expired member')} ${n === 1 ? 'is' : 'are'} kept in service until ${n === 1 ? 'it registers' : 'they register'} again: ${degraded.held.join(', ')}.` }),
    h('button', { type: 'button', class: 'confirm-removal', disabled: confirm && confirm.state === 'pending',
      onclick: () => confirmRemoval(key), text: `Confirm removal of ${plural(n, 'held member')}` }),
    confirm ? h('span', { class: `switch switch-${confirm.state}`, role: 'status', text: confirm.text }) : null);
}

function versionPicker(b, versions, sw) {
  const known = { ...versions };
  if (b.version !== undefined && !(b.version in known)) known[b.version] = 0;
  const names = Object.keys(known).sort(compareVersions);
  const select = h('select', {
    class: 'version', 'aria-label': `version of ${b.name} for backend ${b.key}`,
    // During a rollout the API refuses a switch (promote or abort it instead).
    disabled: (sw && sw.state === 'pending') || rolloutActive(b.rollout),
    onchange: (e) => { const v = e.target.value; e.target.blur(); if (v !== b.version) switchVersion(b.key, v); },
  }, names.map((ver) => h('option', { value: ver, selected: ver === b.version,
    text: `${ver} (${plural(known[ver], 'instance')})` })));
  return h('span', { class: 'subscription' },
    h('span', { class: 'mono', text: `${b.name || '?'}@` }), select,
    sw ? h('span', { class: `switch switch-${sw.state}`, role: 'status', text: sw.text }) : null);
}

/** Orders "1.10.0" after "1.9.0"; falls back to text order. */
function compareVersions(a, b) {
  const pa = a.split(/[.-]/); const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] || ''; const y = pb[i] || '';
    const nx = /^\d+$/.test(x); const ny = /^\d+$/.test(y);
    const c = nx && ny ? Number(x) - Number(y) : x.localeCompare(y);
    if (c) return c;
  }
  return 0;
}

function memberList(v) {
  if (!v.members.length) {
    return h('p', { class: 'empty', text: v.backend.type === 'dynamic'
      ? `No members: nothing registered as ${v.backend.name}@${v.backend.version} yet.` : 'No members.' });
  }
  return h('ul', { class: 'members' }, v.members.map(({ address, label, sample, leaving, held, refused, unresolved, version }) => {
    // "DOWN" until a check has passed: HAProxy has not vouched for a member it has not checked;
    // "REFUSED" when HAProxy would not take it at all, "UNRESOLVED" when its DNS name has no
    // address (the reason is shown next to either).
    const status = unresolved ? 'UNRESOLVED' : refused ? 'REFUSED' : sample ? sample.status : 'DOWN';
    const checkText = sample && sample.checkStatus
      ? `check ${sample.checkStatus}${sample.checkDurationMs !== null && sample.checkDurationMs !== undefined ? ` in ${num(sample.checkDurationMs)} ms` : ''}`
      : 'no check yet';
    return h('li', { class: 'member', 'data-member': address },
      badge(status),
      h('span', { class: 'address mono' }, label || address, version ? versionTag(version, sample) : null),
      h('span', { class: 'check', title: 'last health check, and how long the status has held',
        text: `${checkText}${sample && typeof sample.lastChangeS === 'number' ? ` · ${status} for ${duration(sample.lastChangeS)}` : ''}` }),

      h('span', { class: 'load', text: sample ? `${num(sample.scur)} sess · ${num(sample.rate)}/s` : '' }),
      leaving ? h('span', { class: 'leaving', text: 'leaving' }) : null,
      held ? h('span', { class: 'held', text: 'held: expired in the registry, kept serving' }) : null,
      refused ? h('span', { class: 'refused', text: `HAProxy refused it: ${refused}` }) : null,
      unresolved ? h('span', { class: 'refused', text: unresolved }) : null);
  }));
}

function versionTag(version, sample) {
  const weight = typeof sample.weight === 'number' ? `, HAProxy weight ${sample.weight}` : '';
  return h('span', { class: 'member-version', title: `runs ${version}${weight}`, text: version });
}

// ---- rollouts -------------------------------------------------------------------------------

const ROLLOUT_TONES = { running: 'info', paused: 'warn', aborted: 'bad', finished: 'ok' };
const DECISION_TONES = { abort: 'bad', pause: 'warn', promote: 'ok', finish: 'ok' };
/** Decisions a running rollout lists, newest first (the server keeps up to 50). */
const DECISIONS_SHOWN = 4;

function rolloutActive(rollout) {
  return Boolean(rollout) && (rollout.state === 'running' || rollout.state === 'paused');
}

/** Names one rollout, so a control's outcome is shown only with the rollout it acted on. */
function rolloutName(rollout) {
  return `${rollout.from}→${rollout.version}`;
}

/** The last control used on this backend's rollout, if it was used on `rollout`. */
function rolloutAct(key, rollout) {
  const act = store.rolloutActions[key] || null;
  return act && (!rollout || act.rollout === rolloutName(rollout)) ? act : null;
}

/**
 * A rollout of a new version: how far it got (a progress bar of the new version's share), the
 * plan, why it is where it is (the decisions, newest first) and the operator's controls. An
 * ended one is one line: how and why it ended. No rollout: an empty slot, which keeps the
 * card's block order stable.
 */
function rolloutNote(b) {
  const r = b.rollout;
  const act = rolloutAct(b.key, r);
  if (!r) return h('div', { class: 'rollout-slot' }, act && act.state !== 'armed' ? actStatus(act) : null);
  const title = `Rollout ${r.from} → ${r.version}`;
  if (!rolloutActive(r)) {
    const last = lastDecision(r);
    return h('section', { class: `rollout rollout-ended rollout-${r.state}`, 'data-rollout': b.key, 'data-state': r.state,
      'aria-label': `${title} ${r.state}` },
      h('p', { class: 'rollout-summary' },
        badge(String(r.state).toUpperCase(), ROLLOUT_TONES[r.state]), ' ',
        h('strong', { text: `${title} ${r.state}${last ? ` at ${clock(last.time)}` : ''}` }),
        last && last.reason ? [': ', h('span', { class: 'rollout-reason', text: last.reason })] : null),
      act && act.state !== 'armed' ? actStatus(act) : null);
  }
  return h('section', { class: `rollout rollout-${r.state}`, 'data-rollout': b.key, 'data-state': r.state, 'aria-label': title },
    h('header', { class: 'rollout-head' },
      h('h4', { class: 'rollout-title', text: title }),
      badge(String(r.state).toUpperCase(), ROLLOUT_TONES[r.state])),
    progressBar(r),
    h('dl', { class: 'facts' },
      fact('plan', r.plan ? planSteps(r) : 'manual: the weight changes only through the API'),
      r.plan && r.plan.abort ? fact('aborts on', abortText(r.plan.abort)) : null,
      fact('sticky', stickiness(r.sticky, b.stickyCookie))),
    decisionList(r.decisions || []),
    rolloutControls(b.key, r, act));
}

/** The new version's share of new sessions, with the step it is at and when the next is due. */
function progressBar(r) {
  const weight = Math.max(0, Math.min(100, Number(r.weight) || 0));
  const fill = h('span', { class: 'progress-fill' });
  fill.style.width = `${weight}%`; // set through the DOM: the page's CSP refuses style attributes
  const steps = r.plan && Array.isArray(r.plan.steps) ? r.plan.steps : null;
  const step = steps && typeof r.step === 'number' ? r.step : null;
  const next = step !== null && r.state === 'running' && step + 1 < steps.length && r.stepStarted && r.plan.intervalMs
    ? `next: ${steps[step + 1]}% at ${clock(r.stepStarted + r.plan.intervalMs)}` : null;
  return h('div', { class: 'rollout-progress' },
    h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': weight,
      'aria-label': `share of new sessions sent to ${r.version}` },
      h('span', { class: 'progress-track' }, fill),
      h('span', { class: 'progress-label', text: `${weight}% to ${r.version}` })),
    h('p', { class: 'progress-facts' },
      h('span', { class: 'rollout-step', text: step !== null ? `step ${step + 1} of ${steps.length}` : 'manual weight' }),
      r.stepStarted ? h('span', { text: `since ${clock(r.stepStarted)}` }) : null,
      next ? h('span', { text: next }) : null));
}

/** The plan's weights, the current one marked, and how long each step lasts. */
function planSteps(r) {
  const steps = r.plan.steps || [];
  const every = r.plan.interval || (r.plan.intervalMs ? duration(r.plan.intervalMs / 1000) : null);
  return [
    h('ol', { class: 'steps', 'aria-label': 'weights of the plan' }, steps.map((weight, i) => h('li', {
      class: i < r.step ? 'done' : null, 'aria-current': i === r.step ? 'step' : null, text: `${weight}%` }))),
    every ? h('span', { class: 'muted', text: ` every ${every}` }) : null,
  ];
}

/** "errors above 5.0% (of at least 200 requests) or responses slower than 500 ms". The latency
 *  limit is compared with HAProxy's average response time (it keeps no percentiles). */
function abortText(abort) {
  const parts = [];
  if (typeof abort.errorRate === 'number') {
    parts.push(`errors above ${percent(abort.errorRate)}${abort.minRequests ? ` (of at least ${num(abort.minRequests)} requests)` : ''}`);
  }
  if (typeof abort.latencyP95Ms === 'number') parts.push(`responses slower than ${num(abort.latencyP95Ms)} ms on average`);
  return parts.length ? parts.join(' or ') : 'nothing (no limits set)';
}

function stickiness(sticky, cookie) {
  if (sticky === 'cookie') return `by cookie ${cookie || '(unnamed)'}: a client keeps the version it got`;
  if (sticky === 'hash') return 'by hash: a client keeps the version it got';
  if (sticky === 'none') return 'none: a client may get either version';
  return sticky || '—';
}

function lastDecision(r) {
  const decisions = r.decisions || [];
  return decisions.length ? decisions[decisions.length - 1] : null;
}

/** The newest decisions, newest first: when, what, why (and the figures behind it, on hover). */
function decisionList(decisions) {
  if (!decisions.length) return null;
  const shown = decisions.slice(-DECISIONS_SHOWN).reverse();
  return h('ol', { class: 'decisions', 'aria-label': 'latest decisions, newest first' }, shown.map((d, i) => h('li', {
    class: i === 0 ? 'decision latest' : 'decision', 'data-action': d.action, title: figuresText(d.figures) },
    h('time', { datetime: new Date(d.time).toISOString(), text: clock(d.time) }),
    badge(d.action, DECISION_TONES[d.action] || 'info'),
    h('span', { class: 'reason', text: d.reason || '' }))));
}

/** "new: 3 errors of 812 requests (0.4%), 2 ms · old: …", or null without figures. */
function figuresText(figures) {
  if (!figures) return null;
  return ['new', 'old'].filter((side) => figures[side]).map((side) => {
    const f = figures[side];
    const rtime = typeof f.rtimeMs === 'number' ? `, ${num(f.rtimeMs)} ms` : '';
    return `${side}: ${num(f.errors)} errors of ${num(f.requests)} requests (${percent(f.errorRate)})${rtime}`;
  }).join(' · ');
}

/** Pause (running) or Resume (paused), Promote, and Abort, which asks for a second click. */
function rolloutControls(key, r, act) {
  const name = rolloutName(r);
  const pending = Boolean(act && act.state === 'pending');
  const button = (action, text, onclick, danger) => h('button', {
    type: 'button', class: danger ? 'danger' : null, 'data-action': action, disabled: pending, onclick, text });
  const send = (action) => () => rolloutAction(key, action, name);
  const armed = act && act.state === 'armed';
  return h('div', { class: 'rollout-actions' },
    r.state === 'running' ? button('pause', 'Pause', send('pause')) : null,
    r.state === 'paused' ? button('resume', 'Resume', send('resume')) : null,
    button('promote', `Promote ${r.version}`, send('promote')),
    armed
      ? [button('confirm-abort', 'Confirm abort', send('abort'), true), button('keep', 'Keep going', () => disarmAbort(key))]
      : button('abort', 'Abort', () => armAbort(key, name, `Abort sends every new session back to ${r.from}.`), true),
    act ? actStatus(act) : null);
}

function actStatus(act) {
  const tone = act.state === 'armed' ? 'pending' : act.state;
  return h('span', { class: `switch switch-${tone}`, role: 'status', text: act.text });
}

function errorRateSig(b) {
  const r = b.rollout;
  const track = store.errorRates[b.key];
  if (!rolloutActive(r)) return null;
  return [r.from, r.version, r.state, r.plan && r.plan.abort, track ? track.times.length : 0, track ? track.time : null];
}

/** The old and the new version's share of failed requests, poll by poll, on one scale, with
 *  the plan's abort limit marked. Drawn as the bottom of the rollout's box: a block of its own,
 *  so a new poll redraws the charts and never the buttons under the pointer. */
function errorRateCharts(b) {
  const r = b.rollout;
  if (!rolloutActive(r)) return h('div', { class: 'rollout-slot' });
  const track = store.errorRates[b.key] || { times: [], versions: {} };
  const series = (version) => track.versions[version] || new Array(track.times.length).fill(null);
  const limit = r.plan && r.plan.abort && typeof r.plan.abort.errorRate === 'number' ? r.plan.abort.errorRate : undefined;
  const seen = [r.from, r.version].flatMap((v) => series(v).filter((x) => x !== null));
  const top = Math.max(0.01, limit || 0, ...seen) * 1.1; // never flat at 0%, the limit in view
  const chart = (version, age) => {
    const figure = sparkline(series(version), `${version} (${age}) errors`, { format: percent, top, mark: limit });
    figure.classList.add(`chart-${age}`);
    figure.dataset.version = version;
    return figure;
  };
  const span = track.times.length > 1 ? duration((track.times[track.times.length - 1] - track.times[0]) / 1000) : null;
  return h('div', { class: `charts rollout-charts rollout-${r.state}`, 'data-rollout-charts': b.key, 'data-points': track.times.length },
    chart(r.from, 'old'), chart(r.version, 'new'),
    h('p', { class: 'chart-span', text: `failed share of requests between polls${limit !== undefined ? `, abort above ${percent(limit)}` : ''}${span ? ` · last ${span}` : ' · collecting…'}` }));
}

/** 0.2 -> "20.0%". */
function percent(share) {
  return `${(Number(share || 0) * 100).toFixed(1)}%`;
}

// ---- shared parts ---------------------------------------------------------------------------

function block(key, data, build) {
  return { key, sig: JSON.stringify(data === undefined ? null : data), build };
}

function fact(name, value) {
  return [h('dt', { text: name }), h('dd', null, value === undefined || value === null ? '—' : value)];
}

function chartSig(kind, key) {
  const series = store.history[kind] && store.history[kind][key];
  return [store.history.times.length, store.history.times[store.history.times.length - 1], series ? series.scur.length : 0];
}

function charts(kind, key, rateColumn, rateLabel) {
  const series = (store.history[kind] && store.history[kind][key]) || null;
  const times = store.history.times;
  const pad = (col) => (series ? series[col] : new Array(times.length).fill(null));
  const span = times.length > 1 ? duration((times[times.length - 1] - times[0]) / 1000) : null;
  return h('div', { class: 'charts', 'data-points': series ? series.scur.filter((x) => x !== null).length : 0 },
    sparkline(pad('scur'), 'sessions'),
    sparkline(pad(rateColumn), rateLabel),
    h('p', { class: 'chart-span', text: span ? `last ${span}` : 'collecting…' }));
}
