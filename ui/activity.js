// activity.js: the Activity page. Everything the control plane saw, newest first: registrations
// online/offline/expired, member UP/DOWN with the check result, config changes with their diff,
// reloads with reason, duration and outcome, HAProxy restarts, rejected changes with HAProxy's
// error, and in a fleet each version applied with the node that made the change. Filterable
// by text and by verb; the filter lives in the URL so it can be shared.
import { h, reconcile, clock, iso, num } from './dom.js';
import { store, mergeActivity, changed } from './live.js';
import { apiFetch } from './auth.js';

const VERBS = ['started', 'online', 'offline', 'expired', 'member-up', 'member-down', 'config-changed',
  'reloaded', 'reload-failed', 'rejected', 'haproxy-restarted', 'version-switched', 'fleet-applied'];
const TONES = {
  started: 'info', online: 'ok', offline: 'warn', expired: 'warn', 'member-up': 'ok', 'member-down': 'bad',
  'config-changed': 'info', reloaded: 'ok', 'reload-failed': 'bad', rejected: 'bad',
  'haproxy-restarted': 'warn', 'version-switched': 'info', 'fleet-applied': 'info',
};
const SHOWN_AT_MOST = 500;

export function mount(main) {
  const params = new URLSearchParams(location.search);
  const text = h('input', { type: 'search', id: 'activity-filter', placeholder: 'Filter: object, verb, detail…',
    'aria-label': 'filter activity by text', value: params.get('q') || '' });
  const verb = h('select', { id: 'activity-verb', 'aria-label': 'filter activity by kind' });
  const count = h('p', { class: 'summary', id: 'activity-count', role: 'status' });
  const list = h('ol', { class: 'activity', id: 'activity-list', reversed: true });
  const more = h('button', { type: 'button', class: 'more', text: 'Load older entries', onclick: () => loadOlder(more) });
  let wantedVerb = params.get('verb') || '';
  const onFilter = () => {
    wantedVerb = verb.value;
    const next = new URLSearchParams();
    if (text.value) next.set('q', text.value);
    if (verb.value) next.set('verb', verb.value);
    history.replaceState(null, '', `${location.pathname}${next.toString() ? `?${next}` : ''}`);
    update();
  };
  text.addEventListener('input', onFilter);
  verb.addEventListener('change', onFilter);
  main.append(
    h('div', { class: 'page-head' }, h('h1', { text: 'Activity' }), count),
    h('div', { class: 'filters' }, text, verb),
    list, more);

  function update() {
    const seen = new Set(VERBS);
    for (const r of store.activity) seen.add(r.verb);
    const options = ['', ...seen];
    if (verb.options.length !== options.length) {
      verb.replaceChildren(...options.map((v) => h('option', { value: v, text: v ? v : 'all kinds' })));
    }
    verb.value = wantedVerb;
    const needle = text.value.trim().toLowerCase();
    const all = [];
    for (let i = store.activity.length - 1; i >= 0; i--) {
      const r = store.activity[i];
      if (wantedVerb && r.verb !== wantedVerb) continue;
      if (needle && !haystack(r).includes(needle)) continue;
      all.push(r);
    }
    // Drawing a thousand entries with diffs is slow on a phone; the newest are what matter.
    const matches = all.slice(0, SHOWN_AT_MOST);
    const capped = all.length > SHOWN_AT_MOST ? ` (showing the newest ${num(SHOWN_AT_MOST)})` : '';
    count.textContent = (needle || wantedVerb
      ? `${num(all.length)} of ${num(store.activity.length)} entries match`
      : `${num(store.activity.length)} entries, newest first`) + capped;
    if (!matches.length) {
      reconcile(list, [{ key: 'none', sig: '', build: () => h('li', { class: 'empty', text: store.activity.length ? 'Nothing matches the filter.' : 'Nothing has happened yet.' }) }]);
    } else {
      reconcile(list, matches.map((r) => ({ key: `a${r.id}`, sig: '', build: () => entry(r) })));
    }
    const oldest = store.activity[0];
    more.hidden = !oldest || oldest.id <= 1;
  }
  return { update };
}

function haystack(r) {
  if (!r._haystack) r._haystack = `${r.verb} ${r.object} ${JSON.stringify(r.detail || {})}`.toLowerCase();
  return r._haystack;
}

async function loadOlder(button) {
  const oldest = store.activity[0];
  if (!oldest) return;
  button.disabled = true;
  try {
    const response = await apiFetch(`/ui/api/activity?before=${oldest.id}&limit=200`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const older = await response.json();
    if (!older.length) button.hidden = true;
    mergeActivity(older, false);
    changed('activity');
  } catch (err) {
    button.textContent = `Load older entries (failed: ${err.message})`;
  } finally {
    button.disabled = false;
  }
}

function entry(r) {
  const d = r.detail && typeof r.detail === 'object' ? r.detail : {};
  return h('li', { class: 'entry', 'data-verb': r.verb, 'data-id': r.id },
    h('time', { datetime: iso(r.time), title: iso(r.time), text: clock(r.time) }),
    h('span', { class: `badge tone-${TONES[r.verb] || 'muted'}`, text: r.verb }),
    h('span', { class: 'object mono', text: r.object }),
    details(r.verb, d));
}

function details(verb, d) {
  const parts = [];
  const say = (text) => parts.push(h('span', { class: 'fact', text }));
  const handled = new Set(['diff', 'error']);
  if (verb === 'member-up' || verb === 'member-down') {
    if (d.check_status) say(`check ${d.check_status}${d.check_duration_ms !== undefined ? ` in ${num(d.check_duration_ms)} ms` : ''}`);
    handled.add('check_status').add('check_duration_ms');
  } else if (verb === 'reloaded' || verb === 'reload-failed') {
    if (d.reason) say(`reason: ${d.reason}`);
    if (d.duration_ms !== undefined) say(`took ${num(d.duration_ms)} ms`);
    if (d.outcome) say(`outcome: ${d.outcome}`);
    handled.add('reason').add('duration_ms').add('outcome');
  } else if (verb === 'fleet-applied') {
    // Which node of the fleet made the change this node applied.
    parts.push(h('span', { class: 'fact fleet-change', 'data-node': d.node || '' },
      `fleet config v${d.version} from `, h('strong', { class: 'mono', text: d.node || 'an unknown node' }),
      d.change ? `: ${d.change}` : ''));
    handled.add('version').add('node').add('change');
  }
  for (const [k, v] of Object.entries(d)) {
    if (!handled.has(k)) say(`${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  const blocks = [];
  if (d.error) blocks.push(h('pre', { class: 'error-text', text: Array.isArray(d.error) ? d.error.join('\n') : String(d.error) }));
  if (typeof d.diff === 'string' && d.diff) blocks.push(diffBlock(d.diff));
  if (!parts.length && !blocks.length) return null;
  return h('div', { class: 'detail' }, parts.length ? h('div', { class: 'facts-inline' }, parts) : null, blocks);
}

function diffBlock(diff) {
  const lines = diff.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const added = lines.filter((l) => l.startsWith('+') && !l.startsWith('+++')).length;
  const removed = lines.filter((l) => l.startsWith('-') && !l.startsWith('---')).length;
  const pre = h('pre', { class: 'diff' }, lines.map((line) => {
    const cls = line.startsWith('@@') || line.startsWith('--- ') || line.startsWith('+++ ') ? 'hunk'
      : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : 'ctx';
    // One block per line (CSS), so a line's background spans the width; an empty line keeps
    // its height with a space.
    return h('span', { class: cls, text: line || ' ' });
  }));
  return h('details', { class: 'diff-box', open: lines.length <= 40 },
    h('summary', { text: `haproxy.cfg diff: +${added} −${removed} lines` }), pre);
}
