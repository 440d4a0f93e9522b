// fleet.js: the Fleet page (/nodes). One row per node of the fleet this aqueduct belongs to,
// read from the API's GET /fleet every 1.5 s while the page is open: its id and address, the
// config version it runs against the fleet's (how far behind, in words), how its last version
// went (HAProxy's own lines when it refused one), its HAProxy version, members up, and when it
// last reported. Gone nodes and the node serving this page are marked. An aqueduct started
// without --store answers 404 there: the page says it runs alone.
import { h, reconcile, badge, plural, num, duration, iso } from './dom.js';
import { changed } from './live.js';
import { apiFetch } from './auth.js';

export const title = 'Fleet';

const REFRESH_EVERY_MS = 1500;
const COLUMNS = ['Node', 'Address', 'Config', 'Last outcome', 'HAProxy', 'Members', 'Last seen'];
const OUTCOME_TONES = { applied: 'ok', refused: 'bad', starting: 'warn' };

// The last answer, kept across visits of the page.
const fleet = { view: null, alone: false, error: null, inFlight: false };

async function refresh() {
  if (fleet.inFlight) return;
  fleet.inFlight = true;
  try {
    const response = await apiFetch('/fleet', { cache: 'no-store' });
    const body = await response.json().catch(() => null);
    if (response.status === 404) {
      fleet.alone = true;
      fleet.view = null;
    } else if (!response.ok || !body) {
      throw new Error((body && body.error) || `HTTP ${response.status}`);
    } else {
      fleet.alone = false;
      fleet.view = body;
    }
    fleet.error = null;
  } catch (err) {
    fleet.error = err.message || String(err);
  } finally {
    fleet.inFlight = false;
    changed('fleet');
  }
}

export function mount(main) {
  const summary = h('p', { class: 'summary', id: 'fleet-summary', role: 'status' });
  const problem = h('p', { class: 'problem', id: 'fleet-error', role: 'alert', hidden: true });
  const alone = h('p', { class: 'empty', id: 'fleet-alone', hidden: true,
    text: 'This aqueduct runs alone; start it with --store to join a fleet.' });
  const rows = h('tbody', { id: 'fleet-nodes' });
  const table = h('table', { class: 'fleet', id: 'fleet-table', hidden: true },
    h('thead', null, h('tr', null, COLUMNS.map((c) => h('th', { scope: 'col', text: c })))), rows);
  main.append(h('div', { class: 'page-head' }, h('h1', { text: 'Fleet' }), summary), problem, alone, table);
  refresh();
  const poll = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_EVERY_MS);

  function update() {
    const view = fleet.view;
    problem.hidden = !fleet.error;
    problem.textContent = fleet.error
      ? `The fleet's state is unavailable: ${fleet.error}${view ? ' (showing the last answer)' : ''}` : '';
    alone.hidden = !fleet.alone;
    table.hidden = !view;
    if (!view) {
      summary.textContent = fleet.alone || fleet.error ? '' : 'Loading…';
      return;
    }
    const nodes = (view.nodes || []).map((n) => nodeView(n, view.version));
    summary.textContent = summaryText(view.version, nodes);
    const cells = reconcile(rows, nodes.map((n) => ({ key: `n:${n.id}`, sig: n.sig, build: () => row(n) })));
    // Ages move on every answer: only their text is rewritten, so a row being read (an error
    // being selected) is not rebuilt.
    const now = storeNow(view);
    nodes.forEach((n, i) => {
      const seen = cells[i].querySelector('.seen');
      seen.textContent = seenText(n, now);
      seen.title = n.lastSeenMs ? `last report ${iso(n.lastSeenMs)}` : '';
    });
  }
  return { update, unmount: () => clearInterval(poll) };
}

/** What a row shows, and its signature (everything but the report's time). */
function nodeView(n, fleetVersion) {
  const lag = Number(n.lag || 0);
  const members = n.members && typeof n.members === 'object' ? n.members : null;
  const view = {
    id: String(n.id),
    address: String(n.address || ''),
    isSelf: n.self === true,
    gone: n.gone === true,
    version: Number(n.version || 0),
    fleetVersion,
    lag,
    outcome: String(n.outcome || 'starting'),
    refusedVersion: n.refusedVersion,
    error: n.error || null,
    errorLines: Array.isArray(n.errorLines) ? n.errorLines.map(String) : [],
    haproxyVersion: n.haproxyVersion || null,
    members: members ? { up: Number(members.up || 0), total: Number(members.total || 0) } : null,
    lastSeenMs: Number(n.lastSeenMs || 0),
  };
  view.sig = JSON.stringify({ ...view, lastSeenMs: undefined });
  return view;
}

/** The store's clock at the answer: the answering node writes its own row as it answers. */
function storeNow(view) {
  const nodes = view.nodes || [];
  const own = nodes.find((n) => n.self);
  return own ? Number(own.lastSeenMs || 0) : Math.max(0, ...nodes.map((n) => Number(n.lastSeenMs || 0)));
}

function summaryText(version, nodes) {
  const live = nodes.filter((n) => !n.gone);
  const parts = [`fleet config v${version}`, plural(nodes.length, 'node')];
  const inSync = live.filter((n) => n.lag === 0).length;
  const behind = live.length - inSync;
  const refused = live.filter((n) => n.outcome === 'refused').length;
  const gone = nodes.length - live.length;
  parts.push(`${inSync} in sync`);
  if (behind) parts.push(`${behind} behind`);
  if (refused) parts.push(`${refused} refused a version`);
  if (gone) parts.push(`${gone} gone`);
  return parts.join(' · ');
}

function row(n) {
  return h('tr', { class: `node${n.isSelf ? ' self' : ''}${n.gone ? ' gone' : ''}`, 'data-node': n.id,
    'data-outcome': n.outcome, 'data-lag': n.lag, 'data-gone': String(n.gone), 'data-self': String(n.isSelf) },
  h('td', { class: 'id', 'data-label': 'node' },
    h('strong', { class: 'mono', text: n.id }),
    n.isSelf ? badge('this node', 'info') : null,
    n.gone ? badge('gone', 'bad') : null),
  h('td', { class: 'address', 'data-label': 'address' }, addressLink(n.address)),
  h('td', { class: 'config', 'data-label': 'config' },
    h('span', { class: 'mono running', text: `v${n.version}` }),
    n.lag === 0 ? badge('in sync', 'ok') : badge(`${n.lag} behind`, 'warn'),
    n.lag === 0 ? null : h('span', { class: 'muted', text: `fleet runs v${n.fleetVersion}` })),
  h('td', { class: 'outcome', 'data-label': 'last outcome' }, outcome(n)),
  h('td', { class: 'haproxy', 'data-label': 'HAProxy', text: n.haproxyVersion || '—' }),
  h('td', { class: 'members-up', 'data-label': 'members',
    text: n.members ? `${num(n.members.up)} of ${plural(n.members.total, 'member')} up` : '—' }),
  h('td', { class: 'seen', 'data-label': 'last seen' }));
}

function addressLink(address) {
  if (!/^https?:\/\//.test(address)) return h('span', { class: 'mono', text: address || '—' });
  return h('a', { class: 'mono', href: address, title: "this node's own pages", text: address.replace(/^https?:\/\//, '') });
}

function outcome(n) {
  const parts = [badge(n.outcome, OUTCOME_TONES[n.outcome] || 'muted')];
  if (n.outcome === 'refused') {
    const which = n.refusedVersion !== undefined && n.refusedVersion !== null ? `v${n.refusedVersion}` : 'a version';
    parts.push(h('p', { class: 'refusal', text: `${which} refused; serving v${n.version}${n.error ? `: ${n.error}` : ''}` }));
    if (n.errorLines.length) parts.push(h('pre', { class: 'error-text', text: n.errorLines.join('\n') }));
  } else if (n.outcome === 'starting') {
    parts.push(h('span', { class: 'muted', text: ' runs its local copy' }));
  }
  return parts;
}

function seenText(n, now) {
  if (!n.lastSeenMs) return 'never';
  const ago = Math.max(0, now - n.lastSeenMs);
  if (n.gone) return `no report for ${duration(ago / 1000)}`;
  return ago < 1000 ? 'just now' : `${duration(ago / 1000)} ago`;
}
