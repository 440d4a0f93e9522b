// dom.js: building DOM safely (text only, never HTML strings), keyed updates that rebuild only
// what changed, status badges (always text plus colour) and number/time formatting.

/** Creates an element. attrs: `class`, `text`, `on<event>` handlers, anything else as an
 * attribute (null/false skipped). Children: nodes, strings (as text), arrays; null skipped. */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** Same as h() for SVG elements. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'text') el.textContent = String(value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name === 'className' ? 'class' : name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/**
 * Makes `container`'s children match `blocks` ([{key, sig, build}]), in order. A child whose
 * key and signature are unchanged is kept as it is (no rebuild, no lost scroll or focus); a
 * changed one is rebuilt. A block holding the focused form control is left alone until the
 * control loses focus, so a live update never closes a drop-down under the user's pointer.
 * Returns the elements, in block order.
 */
export function reconcile(container, blocks) {
  const existing = new Map();
  for (const child of Array.from(container.children)) existing.set(child.dataset.key, child);
  const wanted = [];
  for (const block of blocks) {
    const old = existing.get(block.key);
    existing.delete(block.key);
    let el = old;
    if (!el || (el.dataset.sig !== block.sig && !holdsFocus(el))) {
      el = block.build();
      el.dataset.key = block.key;
      el.dataset.sig = block.sig;
      if (old) old.replaceWith(el);
    }
    wanted.push(el);
  }
  for (const stale of existing.values()) stale.remove();
  wanted.forEach((el, i) => {
    if (container.children[i] !== el) container.insertBefore(el, container.children[i] || null);
  });
  return wanted;
}

function holdsFocus(el) {
  const active = document.activeElement;
  return active && active !== document.body && el.contains(active) &&
    (active.tagName === 'SELECT' || active.tagName === 'INPUT');
}

/** 'ok' | 'bad' | 'warn' | 'muted': the colour of a status. The text is always shown too. */
export function tone(status) {
  const s = String(status || '').toLowerCase();
  if (s.startsWith('up') || s.startsWith('open') || s === 'live') return 'ok';
  if (s.startsWith('down') || s.startsWith('full') || s.startsWith('stop') || s === 'refused') return 'bad';
  if (s === '' || s === 'pending' || s === 'no data') return 'muted';
  return 'warn';
}

/** A status label: coloured, and always the status word itself. */
export function badge(status, toneOverride) {
  const text = String(status || 'NO DATA');
  return h('span', { class: `badge tone-${toneOverride || tone(text)}`, 'data-status': text, text });
}

export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : (many || one + 's')}`;
}

/** 12 345 -> "12,345" (the reader's locale). */
export function num(n) {
  return Number(n || 0).toLocaleString();
}

/** Seconds -> "4s", "3m 20s", "2h 5m", "3d 4h". */
export function duration(totalSeconds) {
  let s = Math.max(0, Math.floor(totalSeconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** Epoch ms -> local "14:03:27" (and the date when not today). */
export function clock(ms) {
  const t = new Date(ms);
  const time = t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  if (t.toDateString() === new Date().toDateString()) return time;
  return `${t.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

/** Epoch ms -> ISO text for a title attribute. */
export function iso(ms) {
  return new Date(ms).toISOString();
}
