// live.js: the page's copy of the aqueduct's state, kept current by one stream on /events
// (a snapshot, then deltas), plus the registry view fetched from /ui/api/registry and this
// aqueduct's name from /ui/api/node, and the per-version error rates of each backend computed
// from its members' counters. Pages subscribe with onChange(); the connection indicator shows
// the stream's state in words. The operator's actions (version switch, removal of held
// members, rollout controls) are POSTs from here.

import { apiFetch, readEventStream } from './auth.js';

const ACTIVITY_KEPT = 1000;
/** Points kept per error-rate series: two minutes at one poll every 2 s. */
const ERROR_RATE_POINTS = 60;

export const store = {
  config: { frontends: [], backends: [] },
  stats: null,
  history: { times: [], frontends: {}, backends: {} },
  historyCapacity: 150,
  activity: [], // oldest first, unique ids
  serverOffsetMs: 0, // server clock minus browser clock
  connection: 'connecting',
  registry: null, // last good /ui/api/registry answer
  registryError: null,
  switches: {}, // backend key -> {state: 'pending'|'ok'|'failed', text}
  confirms: {}, // backend key -> {state: 'pending'|'ok'|'failed', text}: held-member removals
  // backend key -> {rollout, action, state: 'armed'|'pending'|'ok'|'failed', text}: the last
  // rollout control used, for the rollout named `rollout` ("from→to").
  rolloutActions: {},
  // backend key -> {times, versions: {version: [failed share or null]}, counters}: see
  // appendErrorRates.
  errorRates: {},
  lastStats: null, // {sampleTime, receivedAt} of the newest stats delta
  node: null, // /ui/api/node: {id, address, fleet}, the aqueduct this page shows
};

const listeners = new Set();
export function onChange(fn) { listeners.add(fn); return () => listeners.delete(fn); }
export function changed(kind) { for (const fn of listeners) fn(kind); }

// ---- the event stream ----------------------------------------------------------------------

let stream = null; // AbortController of the open stream
let retryTimer = null;
let retryDelay = 1000;

const HANDLERS = {
  snapshot(snap) {
    store.config = snap.config || { frontends: [], backends: [] };
    store.stats = snap.stats || null;
    store.history = snap.history || { times: [], frontends: {}, backends: {} };
    store.historyCapacity = snap.historyCapacity || 150;
    store.serverOffsetMs = (snap.serverTime || Date.now()) - Date.now();
    if (snap.stats) appendErrorRates(snap.stats);
    mergeActivity(snap.activity || [], true);
    retryDelay = 1000;
    setConnection('live');
    changed('snapshot');
    refreshRegistry();
    refreshNode();
  },
  config(config) { store.config = config; changed('config'); },
  stats(sample) {
    store.lastStats = { sampleTime: sample.time, receivedAt: Date.now() };
    appendHistory(sample);
    appendErrorRates(sample);
    store.stats = sample;
    changed('stats');
  },
  activity(record) {
    mergeActivity([record], false);
    changed('activity');
    if (['online', 'offline', 'expired', 'version-switched'].includes(record.verb)) refreshRegistrySoon();
  },
};

/** Opens /events (read with fetch so a token can be sent) and reopens it whenever it ends,
 * after 1 s, backing off to 10 s while it keeps failing. */
export function connect() {
  clearTimeout(retryTimer);
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  setConnection(store.connection === 'live' ? 'reconnecting' : store.connection);
  readEventStream('/events', (type, data) => {
    const handler = HANDLERS[type];
    const value = handler && parse(type, data);
    if (value) handler(value);
  }, controller.signal).then(
    () => retry(controller, 'reconnecting'),
    () => retry(controller, 'offline'),
  );
}

function retry(controller, state) {
  if (stream !== controller) return; // replaced by a newer connect()
  setConnection(store.connection === 'live' && state === 'reconnecting' ? 'reconnecting' : state);
  retryTimer = setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 10000);
}

function parse(type, data) {
  try { return JSON.parse(data); } catch (err) { console.warn('bad event', type, err); return null; }
}

function setConnection(state) {
  if (store.connection === state) return;
  store.connection = state;
  changed('connection');
}

/** Appends one sample to the column history, as the server does, trimmed to its capacity. */
function appendHistory(sample) {
  const hist = store.history;
  const last = hist.times.length ? hist.times[hist.times.length - 1] : -Infinity;
  if (last === sample.time) return;
  if (last > sample.time) {
    // The server's clock stepped back; it restarts its history too.
    hist.times = []; hist.frontends = {}; hist.backends = {};
  }
  const len = hist.times.length;
  hist.times.push(sample.time);
  for (const kind of ['frontends', 'backends']) {
    const rows = sample[kind] || {};
    const series = hist[kind];
    for (const key of Object.keys(rows)) {
      if (!series[key]) {
        const empty = () => new Array(len).fill(null);
        series[key] = { scur: empty(), smax: empty(), reqRate: empty(), rate: empty() };
      }
    }
    for (const [key, cols] of Object.entries(series)) {
      const row = rows[key];
      cols.scur.push(row ? row.scur : null);
      cols.smax.push(row ? row.smax : null);
      cols.reqRate.push(row ? row.reqRate : null);
      cols.rate.push(row ? row.rate : null);
    }
  }
  const extra = hist.times.length - store.historyCapacity;
  if (extra > 0) {
    hist.times.splice(0, extra);
    for (const kind of ['frontends', 'backends']) {
      for (const [key, cols] of Object.entries(hist[kind])) {
        for (const col of Object.values(cols)) col.splice(0, extra);
        if (cols.scur.every((v) => v === null)) delete hist[kind][key];
      }
    }
  }
}

// ---- error rates per version ----------------------------------------------------------------

/**
 * Appends, per backend and version, the share of requests that failed since the previous
 * sample: the sum over that version's members of Δerrors over the sum of Δrequests (null when
 * there were no requests). Members' counters are cumulative since HAProxy's last reload, so a
 * counter that went down restarted from 0 and its new value is the delta. A member seen for
 * the first time (or a backend's first sample) only sets the baseline.
 */
function appendErrorRates(sample) {
  const members = sample.members || {};
  for (const key of Object.keys(store.errorRates)) if (!members[key]) delete store.errorRates[key];
  for (const [key, rows] of Object.entries(members)) {
    let track = store.errorRates[key];
    const last = track && track.time;
    if (last === sample.time) continue;
    if (!track || last > sample.time) {
      // First sight, or the server's clock stepped back: start over from this sample.
      track = store.errorRates[key] = { time: null, times: [], versions: {}, counters: {} };
    }
    const { totals, counters } = versionDeltas(track.counters, rows);
    const first = track.time === null;
    track.time = sample.time;
    track.counters = counters;
    if (!first) pushErrorRates(track, sample.time, totals);
  }
}

/** Per version, the requests and errors of `rows` since `before` (server -> counters); and the
 *  counters now, the next call's `before`. */
function versionDeltas(before, rows) {
  const totals = {};
  const counters = {};
  for (const m of rows) {
    if (typeof m.requests !== 'number' || typeof m.errors !== 'number') continue;
    counters[m.server] = { requests: m.requests, errors: m.errors };
    const then = before[m.server];
    if (!then || !m.version) continue;
    const restarted = m.requests < then.requests || m.errors < then.errors;
    const total = totals[m.version] || (totals[m.version] = { requests: 0, errors: 0 });
    total.requests += restarted ? m.requests : m.requests - then.requests;
    total.errors += restarted ? m.errors : m.errors - then.errors;
  }
  return { totals, counters };
}

function pushErrorRates(track, time, totals) {
  track.times.push(time);
  for (const version of new Set([...Object.keys(track.versions), ...Object.keys(totals)])) {
    const series = track.versions[version] || (track.versions[version] = new Array(track.times.length - 1).fill(null));
    const t = totals[version];
    // Connection errors can outnumber requests (TCP mode, refused connects): at most all failed.
    series.push(t && t.requests > 0 ? Math.min(1, t.errors / t.requests) : null);
  }
  const extra = track.times.length - ERROR_RATE_POINTS;
  if (extra > 0) {
    track.times.splice(0, extra);
    for (const [version, series] of Object.entries(track.versions)) {
      series.splice(0, extra);
      if (series.every((v) => v === null)) delete track.versions[version];
    }
  }
}

/** Adds records (deduplicated by id), keeping id order. A snapshot replaces the recent ones. */
export function mergeActivity(records, fromSnapshot) {
  const byId = new Map(store.activity.map((r) => [r.id, r]));
  if (fromSnapshot && records.length) {
    // Entries newer than the snapshot's oldest are whatever the snapshot says (a restarted
    // aqueduct may have a different log); older ones paged in earlier stay.
    const oldest = records[0].id;
    for (const id of Array.from(byId.keys())) if (id >= oldest) byId.delete(id);
  }
  for (const r of records) byId.set(r.id, r);
  store.activity = Array.from(byId.values()).sort((a, b) => a.id - b.id).slice(-ACTIVITY_KEPT);
}

// ---- which aqueduct this is ------------------------------------------------------------------

/** Asks who this aqueduct is (after each snapshot: a restart may have renamed it). */
async function refreshNode() {
  try {
    const response = await apiFetch('/ui/api/node', { cache: 'no-store' });
    if (!response.ok) return; // an older aqueduct: the header names no node
    store.node = await response.json();
    changed('node');
  } catch (_) { /* the stream's reconnects retry */ }
}

// ---- the registry view -----------------------------------------------------------------------

let registryTimer = null;
let registryInFlight = false;

export async function refreshRegistry() {
  if (registryInFlight) return;
  registryInFlight = true;
  try {
    const response = await apiFetch('/ui/api/registry', { cache: 'no-store' });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
    store.registry = body;
    store.registry.receivedAt = Date.now();
    store.registryError = null;
  } catch (err) {
    store.registryError = err.message || String(err);
  } finally {
    registryInFlight = false;
    changed('registry');
  }
}

function refreshRegistrySoon() {
  clearTimeout(registryTimer);
  registryTimer = setTimeout(refreshRegistry, 200);
}

/** Server time now, from the browser clock corrected by the last snapshot. */
export function serverNow() { return Date.now() + store.serverOffsetMs; }

// ---- the version switch ---------------------------------------------------------------------

/** POST /backends/{key} {"version"}: the aqueduct's live version switch. */
export async function switchVersion(backendKey, version) {
  store.switches[backendKey] = { state: 'pending', text: `switching to ${version}…` };
  changed('switch');
  try {
    await post(`/backends/${encodeURIComponent(backendKey)}`, { version });
    store.switches[backendKey] = { state: 'ok', text: `switched to ${version}` };
  } catch (err) {
    store.switches[backendKey] = { state: 'failed', text: `switch failed: ${err.message || err}` };
  }
  changed('switch');
  refreshRegistrySoon();
}

/** Confirms that the members the mass-expiry brake holds in `backendKey` are really gone: they
 *  drain and leave, and the degraded mark clears. */
export async function confirmRemoval(backendKey) {
  store.confirms[backendKey] = { state: 'pending', text: 'removing held members…' };
  changed('switch');
  try {
    const answer = await post(`/backends/${encodeURIComponent(backendKey)}/confirm-removal`);
    const removing = ((answer && answer.removing) || []).length;
    store.confirms[backendKey] = { state: 'ok', text: `removing ${removing} held ${removing === 1 ? 'member' : 'members'}` };
  } catch (err) {
    store.confirms[backendKey] = { state: 'failed', text: `removal failed: ${err.message || err}` };
  }
  changed('switch');
}

/** POSTs `body` as JSON (no body when undefined) and returns the answer parsed, or null when it
 *  is not JSON. Throws an Error with the API's own message (`{"error"}`) for an error status. */
async function post(url, body) {
  const options = { method: 'POST' };
  if (body !== undefined) {
    options.headers = { 'content-type': 'application/json' };
    options.body = JSON.stringify(body);
  }
  const response = await apiFetch(url, options);
  const text = await response.text();
  let answer = null;
  try { answer = JSON.parse(text); } catch (_) { /* plain text */ }
  if (!response.ok) throw new Error((answer && answer.error) || text || `HTTP ${response.status}`);
  return answer;
}

// ---- rollout controls -----------------------------------------------------------------------

/** The words shown while a rollout control's request runs, and once it succeeded. */
const ROLLOUT_ACTIONS = {
  pause: ['pausing…', 'paused: the weight holds'],
  resume: ['resuming…', 'resumed'],
  promote: ['promoting…', 'promoted: every new session goes to the new version'],
  abort: ['aborting…', 'aborted: every new session goes back to the old version'],
};

/** POST /backends/{key}/rollout/{action} (pause, resume, promote, abort) for the rollout
 *  `rollout` names ("from→to"). */
export async function rolloutAction(backendKey, action, rollout) {
  const [doing, done] = ROLLOUT_ACTIONS[action];
  store.rolloutActions[backendKey] = { rollout, action, state: 'pending', text: doing };
  changed('switch');
  try {
    await post(`/backends/${encodeURIComponent(backendKey)}/rollout/${action}`, {});
    store.rolloutActions[backendKey] = { rollout, action, state: 'ok', text: done };
  } catch (err) {
    store.rolloutActions[backendKey] = { rollout, action, state: 'failed', text: `${action} failed: ${err.message || err}` };
  }
  changed('switch');
}

/** The first click on Abort only asks for a second one (no browser dialog: the page says it).
 *  `text` is what an abort would do, in words. */
export function armAbort(backendKey, rollout, text) {
  store.rolloutActions[backendKey] = { rollout, action: 'abort', state: 'armed', text };
  changed('switch');
}

export function disarmAbort(backendKey) {
  delete store.rolloutActions[backendKey];
  changed('switch');
}
