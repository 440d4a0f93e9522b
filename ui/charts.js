// charts.js: the two small drawings, made as SVG by hand: a sparkline of a recent series and a
// healthy/total ring. Both carry a text equivalent for screen readers.
import { s, h, num } from './dom.js';

const WIDTH = 300;
const HEIGHT = 36;

/**
 * A sparkline over `values` (numbers, or null where there was no sample), oldest first.
 * `label` names the series ("sessions", "req/s"); the current value and peak are printed beside it.
 * Options: `format` prints a value (default: a count); `top` is the value at the top edge, so
 * charts meant to be compared share a scale (default: the peak, at least 1); `mark` draws a
 * dashed line at that value (a limit).
 */
export function sparkline(values, label, { format = num, top: scaleTop, mark } = {}) {
  const present = values.filter((v) => v !== null && v !== undefined);
  const peak = present.length ? Math.max(...present) : 0;
  const current = present.length ? present[present.length - 1] : 0;
  const top = scaleTop || Math.max(1, peak);
  const step = values.length > 1 ? WIDTH / (values.length - 1) : WIDTH;
  const y = (v) => (HEIGHT - 2 - (v / top) * (HEIGHT - 4)).toFixed(1);

  // Runs of consecutive samples; a gap (null) starts a new run.
  const runs = [];
  let run = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) { if (run.length) runs.push(run); run = []; return; }
    run.push([(values.length > 1 ? i * step : WIDTH).toFixed(1), y(v)]);
  });
  if (run.length) runs.push(run);

  const svg = s('svg', {
    class: 'spark', viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: 'none',
    role: 'img', 'aria-label': `${label}: now ${format(current)}, peak ${format(peak)} over ${values.length} samples`,
  });
  svg.append(s('line', { class: 'spark-base', x1: 0, x2: WIDTH, y1: HEIGHT - 1, y2: HEIGHT - 1 }));
  if (typeof mark === 'number') svg.append(s('line', { class: 'spark-mark', x1: 0, x2: WIDTH, y1: y(mark), y2: y(mark) }));
  for (const points of runs) {
    if (points.length === 1) points.unshift([Math.max(0, points[0][0] - step).toFixed(1), points[0][1]]);
    const line = points.map(([x, yy]) => `${x},${yy}`).join(' ');
    const area = `M${points[0][0]},${HEIGHT - 1} L${line.replaceAll(' ', ' L')} L${points[points.length - 1][0]},${HEIGHT - 1} Z`;
    svg.append(s('path', { class: 'spark-area', d: area }));
    svg.append(s('polyline', { class: 'spark-line', points: line }));
  }
  return h('figure', { class: 'chart', 'data-series': label },
    h('figcaption', null,
      h('span', { class: 'chart-label', text: label }),
      h('span', { class: 'chart-value', text: present.length ? `${format(current)} now · ${format(peak)} peak` : 'no data' })),
    svg);
}

/** A ring showing healthy out of total, coloured by the healthy share, with "h/t" inside. */
export function ring(healthy, total) {
  const r = 15.9155; // circumference 100, so dash lengths are percentages
  const share = total > 0 ? healthy / total : 0;
  const tone = total === 0 ? 'muted' : share >= 0.7 ? 'ok' : share >= 0.4 ? 'warn' : 'bad';
  const svg = s('svg', { class: `ring tone-${tone}`, viewBox: '0 0 36 36', role: 'img',
    'aria-label': `${healthy} of ${total} members healthy` });
  svg.append(s('circle', { class: 'ring-track', cx: 18, cy: 18, r }));
  if (total > 0 && healthy > 0) {
    svg.append(s('circle', { class: 'ring-fill', cx: 18, cy: 18, r,
      'stroke-dasharray': `${(share * 100).toFixed(2)} ${(100 - share * 100).toFixed(2)}`,
      'stroke-dashoffset': 25 }));
  }
  const text = s('text', { x: 18, y: 20.5, 'text-anchor': 'middle', class: 'ring-text' });
  text.textContent = `${healthy}/${total}`;
  svg.append(text);
  return h('div', { class: 'ring-box', title: `${healthy} of ${total} members healthy` }, svg,
    h('span', { class: 'ring-caption', text: 'healthy' }));
}
