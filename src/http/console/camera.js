// One camera: its live annotated view, counts per line, direction and class, the last minutes'
// measures as small charts (history from the analytics API, then live from the event stream),
// and its open and closed incidents.

import { api, ApiError, fmt, h, picture, readEvents, readMjpeg } from './api.js';

const MINUTES = 15;

/** Repeats `task(signal)` until `signal` aborts, waiting `pause(error)` ms between runs. */
async function keepRunning(signal, task, pause) {
  while (!signal.aborted) {
    let error = null;
    try { await task(signal); } catch (e) { error = e; }
    if (signal.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, pause(error)));
  }
}

/** The live view: the MJPEG stream read with fetch(), or snapshots polled when streaming fails. */
function liveView(id, signal) {
  const img = h('img.live-view#live-view', { alt: `Live annotated view of camera ${id}`, 'data-seq': '', hidden: true });
  const placeholder = h('p.placeholder', {}, 'No picture yet.');
  const status = h('p.note#live-status', { 'aria-live': 'polite' }, 'Connecting to the live view…');
  let paused = false;
  const pause = h('button.secondary#live-pause', {
    type: 'button', 'aria-pressed': 'false',
    onclick: () => {
      paused = !paused;
      pause.setAttribute('aria-pressed', String(paused));
      pause.textContent = paused ? 'Resume live view' : 'Pause live view';
    },
  }, 'Pause live view');
  let current = null;
  const show = (blob, seq) => {
    if (paused) return;
    const url = URL.createObjectURL(blob);
    img.src = url;
    img.hidden = false;
    placeholder.hidden = true;
    img.dataset.seq = String(seq ?? '');
    if (current) URL.revokeObjectURL(current);
    current = url;
  };
  signal.addEventListener('abort', () => { if (current) URL.revokeObjectURL(current); });
  let streaming = true;
  keepRunning(signal, async (s) => {
    if (streaming) {
      status.textContent = 'Live (annotated by the service).';
      // At the rate the service allows (pictures.live_fps).
      await readMjpeg(`/cameras/${encodeURIComponent(id)}/live.mjpeg?overlay=1`, (blob, seq) => {
        status.textContent = 'Live (annotated by the service).';
        show(blob, seq);
      }, s);
      return;
    }
    const { blob, headers } = await picture(`/cameras/${encodeURIComponent(id)}/snapshot.jpg?overlay=1`, s);
    show(blob, headers.get('X-Frame-Seq'));
    status.textContent = 'Snapshots every second (streaming unavailable).';
  }, (error) => {
    if (error instanceof ApiError && error.status === 429) {
      status.textContent = `${error.message} Showing snapshots instead.`;
      streaming = false;
    } else if (error instanceof ApiError && error.status === 503) {
      status.textContent = `No picture yet: ${error.message}`;
    } else if (error) {
      status.textContent = `Live view unavailable (${error.message}); showing snapshots.`;
      streaming = false;
    }
    return streaming ? 2000 : 1000;
  });
  return h('section.panel', { 'aria-labelledby': 'live-title' },
    h('h2#live-title', {}, 'Live view'), h('div.live-wrap', {}, placeholder, img), h('div.row', {}, status, h('div', {}, pause)));
}

function countsPanel(id, signal) {
  const body = h('tbody');
  const status = h('p.note', { 'aria-live': 'polite' });
  async function refresh() {
    try {
      const counts = await api(`/cameras/${encodeURIComponent(id)}/counts`, { signal });
      body.replaceChildren(...counts.lines.map((line) => h('tr', { 'data-line': line.id },
        h('th', { scope: 'row' }, line.id, line.name ? h('div.note', {}, line.name) : null),
        h('td.num', { 'data-dir': 'in' }, line.in),
        h('td.num', { 'data-dir': 'out' }, line.out),
        h('td', {}, Object.entries(line.by_class).map(([cls, c]) => `${cls} ${c.in}/${c.out}`).join(', ') || '–'))));
      if (!counts.lines.length) body.replaceChildren(h('tr', {}, h('td', { colspan: 4 }, 'No counting line: draw one in the geometry editor.')));
      status.textContent = `State ${counts.status.state}, geometry version ${counts.status.geometry_version}.`;
    } catch (e) {
      if (!signal.aborted) status.textContent = e.message;
    }
  }
  refresh();
  const timer = setInterval(refresh, 2000);
  signal.addEventListener('abort', () => clearInterval(timer));
  return h('section.panel', { 'aria-labelledby': 'counts-title' }, h('h2#counts-title', {}, 'Counts'),
    h('table#counts', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Line'), h('th.num', { scope: 'col' }, 'In'),
      h('th.num', { scope: 'col' }, 'Out'), h('th', { scope: 'col' }, 'By class (in/out)'))), body), status);
}

function minuteOf(time) {
  return Math.floor(new Date(time).getTime() / 60000);
}

/** A small SVG line chart of `values` (oldest first). */
function sparkline(label, values, unit) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  const present = values.filter((v) => v !== null);
  const max = Math.max(1, ...present);
  const last = present.length ? present[present.length - 1] : null;
  svg.setAttribute('viewBox', '0 0 150 50');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${label}: last ${MINUTES} minutes, latest ${fmt(last)} ${unit}, highest ${fmt(max)}`);
  const axis = document.createElementNS(ns, 'line');
  for (const [k, v] of Object.entries({ x1: 0, y1: 49, x2: 150, y2: 49, class: 'axis' })) axis.setAttribute(k, v);
  const line = document.createElementNS(ns, 'polyline');
  const step = 150 / (values.length - 1 || 1);
  line.setAttribute('points', values.map((v, i) => (v === null ? null : `${(i * step).toFixed(1)},${(48 - (v / max) * 44).toFixed(1)}`))
    .filter(Boolean).join(' '));
  svg.append(axis, line);
  return h('figure.chart', {}, svg, h('figcaption.note', {}, `${label}: ${fmt(last)} ${unit} (max ${fmt(max)})`));
}

/** Measures per minute: history from the analytics API, crossings added live from the events. */
function chartsPanel(id, signal, events) {
  const grid = h('div.charts#charts');
  const status = h('p.note', { 'aria-live': 'polite' });
  // element id -> kind, minute -> {volume, speed}
  const history = new Map();
  const live = new Map();
  function draw() {
    const now = minuteOf(Date.now());
    const minutes = Array.from({ length: MINUTES }, (_, i) => now - MINUTES + 1 + i);
    const figures = [];
    const ids = new Set([...history.keys(), ...live.keys()]);
    for (const element of [...ids].sort()) {
      const past = history.get(element) || { kind: 'line', minutes: new Map() };
      const seen = live.get(element) || new Map();
      const volume = minutes.map((m) => Math.max(past.minutes.get(m)?.volume ?? 0, seen.get(m) ?? 0));
      figures.push(sparkline(`${past.kind} ${element} vehicles/min`, volume, '/min'));
      const speeds = minutes.map((m) => past.minutes.get(m)?.speed ?? null);
      if (speeds.some((v) => v !== null)) figures.push(sparkline(`${past.kind} ${element} mean speed`, speeds, 'km/h'));
    }
    grid.replaceChildren(...(figures.length ? figures : [h('p.note', {}, 'No measures in the last minutes.')]));
  }
  async function load() {
    const from = new Date(Date.now() - MINUTES * 60000).toISOString();
    try {
      const result = await api(`/cameras/${encodeURIComponent(id)}/analytics?interval=1m&from=${encodeURIComponent(from)}`, { signal });
      history.clear();
      for (const series of result.elements) {
        const entry = history.get(series.id) || { kind: series.kind, minutes: new Map() };
        for (const interval of series.intervals) {
          const m = minuteOf(interval.start);
          const before = entry.minutes.get(m) || { volume: 0, speed: null };
          entry.minutes.set(m, {
            volume: before.volume + interval.measures.volume_total,
            speed: interval.measures.speed_mean_kmh ?? before.speed,
          });
        }
        history.set(series.id, entry);
      }
      status.textContent = '';
    } catch (e) {
      if (!signal.aborted) status.textContent = e.status === 404 ? 'No history yet.' : e.message;
    }
    draw();
  }
  events.push((type, event) => {
    if (type !== 'line_crossing') return;
    const counts = live.get(event.line_id) || new Map();
    const m = minuteOf(event.ts);
    counts.set(m, (counts.get(m) || 0) + 1);
    live.set(event.line_id, counts);
    draw();
  });
  load();
  const timer = setInterval(load, 60000);
  signal.addEventListener('abort', () => clearInterval(timer));
  return h('section.panel', { 'aria-labelledby': 'charts-title' },
    h('h2#charts-title', {}, `Last ${MINUTES} minutes`), grid, status);
}

function incidentsPanel(id, signal, events) {
  const incidents = new Map();
  const open = h('tbody');
  const closed = h('tbody');
  const status = h('p.note', { 'aria-live': 'polite' });
  const row = (i) => h('tr', {}, h('td', {}, i.incident_type), h('td', {}, i.zone_id), h('td', {}, i.class || '–'),
    h('td', {}, new Date(i.started_at).toLocaleTimeString()), h('td.num', {}, fmt(i.duration_s)));
  function draw() {
    const all = [...incidents.values()].sort((a, b) => b.started_at.localeCompare(a.started_at));
    const none = (text) => h('tr', {}, h('td', { colspan: 5 }, text));
    const o = all.filter((i) => !i.closed).map(row);
    const c = all.filter((i) => i.closed).slice(0, 20).map(row);
    open.replaceChildren(...(o.length ? o : [none('No open incident.')]));
    closed.replaceChildren(...(c.length ? c : [none('None in the last hour.')]));
  }
  function take(type, event) {
    if (!type.startsWith('incident_')) return;
    incidents.set(event.incident_id, { ...incidents.get(event.incident_id), ...event, closed: type === 'incident_closed' });
  }
  async function load() {
    const from = new Date(Date.now() - 3600000).toISOString();
    try {
      for (const type of ['incident_opened', 'incident_updated', 'incident_closed']) {
        let cursor = null;
        do {
          const page = await api(`/events?camera_id=${encodeURIComponent(id)}&type=${type}&from=${encodeURIComponent(from)}` +
            `&limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { signal });
          for (const event of page.events) {
            if (type !== 'incident_closed' && incidents.get(event.incident_id)?.closed) continue;
            take(type, event);
          }
          cursor = page.next_cursor;
        } while (cursor);
      }
    } catch (e) {
      if (!signal.aborted) status.textContent = e.message;
    }
    draw();
  }
  events.push((type, event) => { take(type, event); draw(); });
  load();
  const head = () => h('thead', {}, h('tr', {}, ...['Type', 'Zone', 'Class', 'Started', 'Duration (s)']
    .map((t) => h('th', { scope: 'col' }, t))));
  return h('section.panel', { 'aria-labelledby': 'incidents-title' }, h('h2#incidents-title', {}, 'Incidents'),
    h('h3', {}, 'Open'), h('table#incidents-open', {}, head(), open),
    h('h3', {}, 'Closed (last hour)'), h('table#incidents-closed', {}, head(), closed), status);
}

export function cameraPage(main, id) {
  const controller = new AbortController();
  const signal = controller.signal;
  const listeners = [];
  const streamStatus = h('p.note#events-status', { 'aria-live': 'polite' });
  keepRunning(signal, async (s) => {
    streamStatus.textContent = 'Live events connected.';
    await readEvents(`camera_id=${encodeURIComponent(id)}`, (type, event) => listeners.forEach((f) => f(type, event)), s);
  }, (error) => {
    streamStatus.textContent = `Live events interrupted${error ? ` (${error.message})` : ''}; reconnecting.`;
    return 3000;
  });
  const title = h('h1', {}, `Camera ${id}`);
  main.replaceChildren(title,
    h('p', {}, h('a', { href: '#/cameras' }, '← Cameras'), ' · ', h('a', { href: `#/cameras/${encodeURIComponent(id)}/geometry` }, 'Geometry editor')),
    h('div.grid2', {}, liveView(id, signal),
      h('div', {}, countsPanel(id, signal), incidentsPanel(id, signal, listeners))),
    chartsPanel(id, signal, listeners), streamStatus);
  api(`/cameras/${encodeURIComponent(id)}`, { signal }).then((c) => { if (c.name) title.textContent = `Camera ${id}: ${c.name}`; })
    .catch((e) => { if (!signal.aborted) streamStatus.textContent = e.message; });
  return () => controller.abort();
}
