// The geometry editor: counting lines (with their "in" direction as an arrow), zones, lanes
// (direction and stop line), exclusions and calibration points drawn on the camera's snapshot;
// saved with PUT .../geometry as the next version (the API validates and its message is shown
// next to the drawing); older versions listed with what changed. Coordinates are the camera's
// pixels (X-Source-Width x X-Source-Height), whatever size the picture is drawn at; a camera that
// crops sends only its region (X-Source-Region: x,y,width,height), drawn in place on grey.

import { api, can, h, needsRole, picture } from './api.js';

const COLORS = { line: '#ffd400', zone: '#00c8ff', lane: '#3ddc84', exclusion: '#ff5c8a', calibration: '#ff00ff', stop: '#ff3b30', loop: '#00a0a0' };
const KINDS = ['lines', 'zones', 'exclusions'];
const HIT = 10; // screen pixels

const round = (v) => Math.round(v * 10) / 10;
const mid = (a, b) => [round((a[0] + b[0]) / 2), round((a[1] + b[1]) / 2)];
const clone = (v) => JSON.parse(JSON.stringify(v));

/** A geometry with every list present (the API omits none, but an old version may). */
function normal(g) {
  const out = { lines: [], zones: [], exclusions: [], ...clone(g || {}) };
  for (const k of KINDS) out[k] = out[k] || [];
  return out;
}

/** What changed from `before` to `after`: `[{change, what}]` by element id (calibration by index). */
export function diff(before, after) {
  const changes = [];
  const a = normal(before);
  const b = normal(after);
  const shape = (e) => JSON.stringify([e.a, e.b, e.polygon, e.direction, e.stop_line, e.loop?.at]);
  for (const kind of KINDS) {
    const name = kind.slice(0, -1);
    const old = new Map(a[kind].map((e) => [e.id, e]));
    const now = new Map(b[kind].map((e) => [e.id, e]));
    for (const [id, e] of now) {
      const was = old.get(id);
      if (!was) changes.push({ change: 'added', what: `${e.direction ? 'lane' : name} ${id}` });
      else if (shape(was) !== shape(e)) changes.push({ change: 'moved', what: `${name} ${id}` });
      else if (JSON.stringify(was) !== JSON.stringify(e)) changes.push({ change: 'changed', what: `${name} ${id}` });
    }
    for (const id of old.keys()) if (!now.has(id)) changes.push({ change: 'removed', what: `${name} ${id}` });
  }
  const pa = a.calibration?.points || [];
  const pb = b.calibration?.points || [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const what = `calibration point ${i + 1}`;
    if (!pa[i]) changes.push({ change: 'added', what });
    else if (!pb[i]) changes.push({ change: 'removed', what });
    else if (JSON.stringify(pa[i]) !== JSON.stringify(pb[i])) changes.push({ change: 'moved', what });
  }
  if (JSON.stringify(a.min_object_size) !== JSON.stringify(b.min_object_size)) changes.push({ change: 'changed', what: 'min_object_size' });
  return changes;
}

function inside(p, polygon) {
  let hit = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i];
    const [xj, yj] = polygon[j];
    if ((yi > p[1]) !== (yj > p[1]) && p[0] < ((xj - xi) * (p[1] - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

function nearSegment(p, a, b, tolerance) {
  const [dx, dy] = [b[0] - a[0], b[1] - a[1]];
  const t = Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy || 1)));
  return Math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy) <= tolerance;
}

export function editorPage(main, id) {
  const controller = new AbortController();
  const signal = controller.signal;
  const editable = can('operator');
  let geometry = normal({});
  let version = 0;
  let source = { width: 320, height: 240 };
  let background = null;
  let region = null; // [x, y, width, height] of the frame the picture shows
  let tool = 'select';
  let draft = [];
  let selected = null; // {kind, index} or {kind: 'calibration', index}
  let drag = null;
  let segmentFor = null; // {index, field: 'direction' | 'stop_line'} while drawing a lane's segment
  let nextNumber = 1;

  const canvas = h('canvas#geometry-canvas', {
    width: 640, height: 480, tabindex: 0,
    'aria-label': `Geometry of camera ${id} drawn on its picture. Choose a tool, then draw with the mouse or a finger; ` +
      'with an element selected, arrow keys move it (Shift: 10 px) and Delete removes it; Enter closes a shape, Escape drops it.',
  });
  const ctx = canvas.getContext('2d');
  const error = h('div.error#geometry-error', { role: 'alert', 'aria-live': 'assertive' });
  const saved = h('p.note#geometry-status', { role: 'status' });
  const list = h('ul.elements#elements');
  const json = h('textarea#geometry-json', { rows: 10, spellcheck: false, 'aria-describedby': 'geometry-error' });
  const versions = h('select#versions', { 'aria-label': 'Geometry version' });
  const changes = h('ul.diff#version-changes', { 'aria-live': 'polite' });
  const hint = h('p.note#tool-hint', { 'aria-live': 'polite' });

  const toolNames = { select: 'Select / move', line: 'Counting line', zone: 'Zone', lane: 'Lane', exclusion: 'Exclusion', calibration: 'Calibration point' };
  const hints = {
    select: 'Drag a point or an element to move it; click one to select it.',
    line: 'Drag from a to b. Vehicles moving the way the arrow points count as "in".',
    zone: 'Click each corner, then Close shape (or Enter, or double-click).',
    lane: 'Click each corner, then Close shape; its direction goes from the first edge to the opposite one (Set direction to redraw).',
    exclusion: 'Click each corner of an area whose detections are ignored, then Close shape.',
    calibration: 'Click a point on the road, then type where it lies on the road (metres). Four or more, no three in a line.',
  };
  const toolInputs = Object.entries(toolNames).map(([value, label]) => {
    const input = h('input', { type: 'radio', name: 'tool', value, id: `tool-${value}`, checked: value === 'select',
      onchange: () => { tool = value; draft = []; segmentFor = null; hint.textContent = hints[value]; draw(); } });
    return [input, h('label', { for: `tool-${value}` }, input, label)];
  });
  const finish = h('button.secondary#close-shape', { type: 'button', onclick: () => closeShape() }, 'Close shape');
  const save = h('button#save-geometry', { type: 'button', onclick: () => saveGeometry() }, 'Save as next version');
  const applyJson = h('button.secondary#apply-json', { type: 'button', onclick: () => {
    try {
      geometry = normal(JSON.parse(json.value));
      error.textContent = '';
      changed();
    } catch (e) {
      error.textContent = `The JSON does not parse: ${e.message}`;
    }
  } }, 'Apply JSON to the drawing');
  const restore = h('button.secondary#load-version', { type: 'button', onclick: async () => {
    const old = await api(`/cameras/${encodeURIComponent(id)}/geometry?version=${versions.value}`, { signal });
    geometry = normal(old.geometry);
    selected = null;
    changed();
    saved.textContent = `Version ${versions.value} loaded into the editor; save to make it the next version.`;
  } }, 'Edit this version');

  // --- coordinates -----------------------------------------------------------------------------

  const scale = () => canvas.width / source.width;
  /** Canvas pixels per nominal pen pixel (the canvas is drawn at twice the picture's size). */
  const pen = () => canvas.width / 640;
  function toSource(event) {
    const rect = canvas.getBoundingClientRect();
    return [round(((event.clientX - rect.left) / rect.width) * source.width),
      round(((event.clientY - rect.top) / rect.height) * source.height)];
  }
  /** Source pixels per screen pixel, for hit tests. */
  const perScreen = () => source.width / canvas.getBoundingClientRect().width;

  // --- drawing ---------------------------------------------------------------------------------

  function arrow(from, to, color) {
    const s = scale();
    const [x0, y0, x1, y1] = [from[0] * s, from[1] * s, to[0] * s, to[1] * s];
    const angle = Math.atan2(y1 - y0, x1 - x0);
    ctx.strokeStyle = ctx.fillStyle = color;
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x1, y1);
    const head = 12 * pen();
    ctx.lineTo(x1 - head * Math.cos(angle - 0.45), y1 - head * Math.sin(angle - 0.45));
    ctx.lineTo(x1 - head * Math.cos(angle + 0.45), y1 - head * Math.sin(angle + 0.45));
    ctx.closePath(); ctx.fill();
  }
  function label(text, p, color) {
    const s = scale();
    const u = pen();
    ctx.font = `600 ${Math.round(15 * u)}px system-ui, sans-serif`;
    ctx.lineWidth = 3 * u; ctx.strokeStyle = 'rgba(0,0,0,.8)'; ctx.strokeText(text, p[0] * s + 4 * u, p[1] * s - 4 * u);
    ctx.fillStyle = color; ctx.fillText(text, p[0] * s + 4 * u, p[1] * s - 4 * u);
  }
  function polygon(points, color, fill, closed = true) {
    const s = scale();
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(p[0] * s, p[1] * s) : ctx.moveTo(p[0] * s, p[1] * s)));
    if (closed) ctx.closePath();
    if (fill) { ctx.fillStyle = fill; ctx.fill(); }
    ctx.strokeStyle = color; ctx.stroke();
    const u = 4 * pen();
    for (const p of points) { ctx.fillStyle = color; ctx.fillRect(p[0] * s - u, p[1] * s - u, 2 * u, 2 * u); }
  }
  function draw() {
    const s = scale();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#222';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (background) {
      const [x, y, w, hgt] = region ?? [0, 0, source.width, source.height];
      ctx.drawImage(background, x * scale(), y * scale(), w * scale(), hgt * scale());
    }
    const isSelected = (kind, index) => selected && selected.kind === kind && selected.index === index;
    ctx.lineWidth = 2 * pen();
    geometry.exclusions.forEach((e, i) => {
      ctx.lineWidth = (isSelected('exclusions', i) ? 4 : 2) * pen();
      polygon(e.polygon, COLORS.exclusion, 'rgba(255,92,138,.25)');
      if (e.polygon[0]) label(`excl ${e.id}`, e.polygon[0], COLORS.exclusion);
    });
    geometry.zones.forEach((z, i) => {
      const color = z.direction ? COLORS.lane : COLORS.zone;
      ctx.lineWidth = (isSelected('zones', i) ? 4 : 2) * pen();
      polygon(z.polygon, color, z.direction ? 'rgba(61,220,132,.15)' : 'rgba(0,200,255,.15)');
      if (z.polygon[0]) label(`${z.direction ? 'lane' : 'zone'} ${z.id}`, z.polygon[0], color);
      ctx.lineWidth = 2 * pen();
      if (z.direction) arrow(z.direction[0], z.direction[1], color);
      if (z.stop_line) { ctx.lineWidth = 3 * pen(); polygon(z.stop_line, COLORS.stop, null, false); label('stop', z.stop_line[1], COLORS.stop); }
      if (z.loop) { ctx.lineWidth = 3 * pen(); polygon(z.loop.at, COLORS.loop, null, false); label(`loop ${z.loop.length_m} m`, z.loop.at[1], COLORS.loop); }
    });
    geometry.lines.forEach((l, i) => {
      ctx.lineWidth = (isSelected('lines', i) ? 5 : 3) * pen();
      polygon([l.a, l.b], COLORS.line, null, false);
      // "in" is the crossing from the left of a -> b to its right (image coordinates).
      const [dx, dy] = [l.b[0] - l.a[0], l.b[1] - l.a[1]];
      const length = Math.hypot(dx, dy) || 1;
      const m = mid(l.a, l.b);
      const reach = (40 * pen()) / s;
      ctx.lineWidth = 2 * pen();
      arrow(m, [m[0] - (dy / length) * reach, m[1] + (dx / length) * reach], COLORS.line);
      label(`${l.id} in`, [m[0] - (dy / length) * reach, m[1] + (dx / length) * reach], COLORS.line);
    });
    (geometry.calibration?.points || []).forEach((p, i) => {
      ctx.fillStyle = COLORS.calibration;
      ctx.beginPath(); ctx.arc(p.image[0] * s, p.image[1] * s, isSelected('calibration', i) ? 7 : 5, 0, 2 * Math.PI); ctx.fill();
      label(`P${i + 1} (${p.ground[0]}, ${p.ground[1]}) m`, p.image, COLORS.calibration);
    });
    if (draft.length) {
      ctx.lineWidth = 2 * pen();
      ctx.setLineDash([6, 4]);
      const color = tool === 'line' || segmentFor ? COLORS.line : COLORS[tool] || '#fff';
      polygon(draft, color, null, false);
      ctx.setLineDash([]);
    }
  }

  // --- the element list and the JSON view ------------------------------------------------------

  function elementItem(kind, index) {
    const e = kind === 'calibration' ? geometry.calibration.points[index] : geometry[kind][index];
    const what = kind === 'calibration' ? `P${index + 1}` : `${kind === 'zones' && e.direction ? 'lane' : kind.slice(0, -1)}`;
    const controls = [];
    const select = h('button.secondary', { type: 'button', 'aria-pressed': String(Boolean(selected && selected.kind === kind && selected.index === index)),
      onclick: () => { selected = { kind, index }; renderList(); draw(); canvas.focus(); } }, kind === 'calibration' ? what : `${what} ${e.id}`);
    controls.push(select);
    if (kind === 'calibration') {
      for (const axis of [0, 1]) {
        const input = h('input', { type: 'number', step: 'any', value: String(e.ground[axis]), 'aria-label': `P${index + 1} road ${axis ? 'y' : 'x'} (m)`,
          onchange: () => { e.ground[axis] = Number(input.value); changed(false); } });
        controls.push(h('span', {}, axis ? 'y' : 'x', ' ', input));
      }
    } else {
      const idInput = h('input', { value: e.id, 'aria-label': `${what} id`, onchange: () => { e.id = idInput.value.trim(); changed(); } });
      controls.push(idInput);
      if (kind === 'zones') {
        controls.push(h('button.secondary', { type: 'button', onclick: () => startSegment(index, 'direction') }, e.direction ? 'Redraw direction' : 'Make a lane'));
        if (e.direction) controls.push(h('button.secondary', { type: 'button', onclick: () => startSegment(index, 'stop_line') }, 'Set stop line'));
      }
    }
    controls.push(h('button.danger', { type: 'button', 'aria-label': `Remove ${kind === 'calibration' ? what : `${what} ${e.id}`}`, onclick: () => remove(kind, index) }, 'Remove'));
    if (!editable) controls.slice(1).forEach((c) => { c.disabled = true; c.querySelectorAll?.('input').forEach((i) => { i.disabled = true; }); });
    return h(`li${selected && selected.kind === kind && selected.index === index ? '.selected' : ''}`, {}, ...controls);
  }
  function renderList() {
    const items = [];
    for (const kind of KINDS) geometry[kind].forEach((_, i) => items.push(elementItem(kind, i)));
    (geometry.calibration?.points || []).forEach((_, i) => items.push(elementItem('calibration', i)));
    list.replaceChildren(...(items.length ? items : [h('li.note', {}, 'Nothing drawn yet.')]));
  }
  function changed(relist = true) {
    json.value = JSON.stringify(geometry, null, 2);
    if (relist) renderList();
    draw();
  }
  function remove(kind, index) {
    if (kind === 'calibration') {
      geometry.calibration.points.splice(index, 1);
      if (!geometry.calibration.points.length) delete geometry.calibration;
    } else {
      geometry[kind].splice(index, 1);
    }
    selected = null;
    changed();
  }
  function freshId(prefix) {
    const used = new Set(KINDS.flatMap((k) => geometry[k].map((e) => e.id)));
    while (used.has(`${prefix}-${nextNumber}`)) nextNumber++;
    return `${prefix}-${nextNumber++}`;
  }
  function startSegment(index, field) {
    segmentFor = { index, field };
    draft = [];
    hint.textContent = `Drag the ${field === 'direction' ? 'direction of travel' : 'stop line'} of lane ${geometry.zones[index].id}.`;
    canvas.focus();
  }

  // --- drawing with the pointer ----------------------------------------------------------------

  function closeShape() {
    if (!['zone', 'lane', 'exclusion'].includes(tool) || !draft.length) return;
    // Sent as drawn: the API says what is wrong with a shape (too few corners, crossing itself).
    const polygonPoints = draft.map((p) => [p[0], p[1]]);
    if (tool === 'exclusion') {
      geometry.exclusions.push({ id: freshId('exclusion'), polygon: polygonPoints });
      selected = { kind: 'exclusions', index: geometry.exclusions.length - 1 };
    } else {
      const zone = { id: freshId(tool), polygon: polygonPoints };
      const n = polygonPoints.length;
      if (tool === 'lane' && n >= 3) {
        const half = Math.floor(n / 2);
        zone.direction = [mid(polygonPoints[0], polygonPoints[1]), mid(polygonPoints[half], polygonPoints[(half + 1) % n])];
      }
      geometry.zones.push(zone);
      selected = { kind: 'zones', index: geometry.zones.length - 1 };
    }
    draft = [];
    changed();
  }

  /** What lies under `p`: a point to drag (`point` is the array to change) or a whole element. */
  function hitTest(p) {
    const tolerance = HIT * perScreen();
    const near = (q) => Math.hypot(q[0] - p[0], q[1] - p[1]) <= tolerance;
    const points = [];
    (geometry.calibration?.points || []).forEach((c, index) => points.push({ kind: 'calibration', index, point: c.image }));
    geometry.lines.forEach((l, index) => points.push({ kind: 'lines', index, point: l.a }, { kind: 'lines', index, point: l.b }));
    geometry.zones.forEach((z, index) => {
      for (const q of [...z.polygon, ...(z.direction || []), ...(z.stop_line || []), ...(z.loop?.at || [])]) points.push({ kind: 'zones', index, point: q });
    });
    geometry.exclusions.forEach((e, index) => e.polygon.forEach((q) => points.push({ kind: 'exclusions', index, point: q })));
    const handle = points.find((c) => near(c.point));
    if (handle) return handle;
    const line = geometry.lines.findIndex((l) => nearSegment(p, l.a, l.b, tolerance));
    if (line >= 0) return { kind: 'lines', index: line };
    const zone = geometry.zones.findIndex((z) => inside(p, z.polygon));
    if (zone >= 0) return { kind: 'zones', index: zone };
    const exclusion = geometry.exclusions.findIndex((e) => inside(p, e.polygon));
    if (exclusion >= 0) return { kind: 'exclusions', index: exclusion };
    return null;
  }
  /** Every point of an element, to move it whole. */
  function pointsOf(kind, index) {
    if (kind === 'calibration') return [geometry.calibration.points[index].image];
    const e = geometry[kind][index];
    return kind === 'lines' ? [e.a, e.b] : [...e.polygon, ...(e.direction || []), ...(e.stop_line || []), ...(e.loop?.at || [])];
  }
  function moveBy(points, dx, dy) {
    for (const q of points) { q[0] = round(q[0] + dx); q[1] = round(q[1] + dy); }
  }

  canvas.addEventListener('pointerdown', (event) => {
    if (!editable) return;
    canvas.setPointerCapture(event.pointerId);
    const p = toSource(event);
    if (segmentFor || tool === 'line') { draft = [p, p]; draw(); return; }
    if (tool === 'calibration') {
      geometry.calibration = geometry.calibration || { points: [] };
      geometry.calibration.points.push({ image: p, ground: [0, 0] });
      selected = { kind: 'calibration', index: geometry.calibration.points.length - 1 };
      changed();
      return;
    }
    if (tool === 'select') {
      const hit = hitTest(p);
      selected = hit ? { kind: hit.kind, index: hit.index } : null;
      drag = hit ? { points: hit.point ? [hit.point] : pointsOf(hit.kind, hit.index), from: p } : null;
      renderList();
      draw();
      return;
    }
    draft.push(p);
    draw();
  });
  canvas.addEventListener('pointermove', (event) => {
    if (!editable) return;
    const p = toSource(event);
    if ((segmentFor || tool === 'line') && draft.length === 2) { draft[1] = p; draw(); return; }
    if (drag) {
      moveBy(drag.points, p[0] - drag.from[0], p[1] - drag.from[1]);
      drag.from = p;
      draw();
    }
  });
  canvas.addEventListener('pointerup', (event) => {
    if (!editable) return;
    const p = toSource(event);
    if ((segmentFor || tool === 'line') && draft.length === 2) {
      draft[1] = p;
      const [a, b] = draft;
      draft = [];
      if (Math.hypot(b[0] - a[0], b[1] - a[1]) * scale() < 3) { draw(); return; }
      if (segmentFor) {
        geometry.zones[segmentFor.index][segmentFor.field] = [a, b];
        selected = { kind: 'zones', index: segmentFor.index };
        segmentFor = null;
        hint.textContent = hints[tool];
      } else {
        geometry.lines.push({ id: freshId('line'), a, b });
        selected = { kind: 'lines', index: geometry.lines.length - 1 };
      }
      changed();
      return;
    }
    if (drag) { drag = null; changed(); }
  });
  canvas.addEventListener('dblclick', () => closeShape());
  canvas.addEventListener('keydown', (event) => {
    if (!editable) return;
    if (event.key === 'Enter') { closeShape(); event.preventDefault(); return; }
    if (event.key === 'Escape') { draft = []; segmentFor = null; draw(); return; }
    if (!selected) return;
    if (event.key === 'Delete' || event.key === 'Backspace') { remove(selected.kind, selected.index); event.preventDefault(); return; }
    const step = event.shiftKey ? 10 : 1;
    const delta = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[event.key];
    if (!delta) return;
    moveBy(pointsOf(selected.kind, selected.index), ...delta);
    changed(false);
    event.preventDefault();
  });

  // --- the API ---------------------------------------------------------------------------------

  async function saveGeometry() {
    error.textContent = '';
    saved.textContent = 'Saving…';
    try {
      const answer = await api(`/cameras/${encodeURIComponent(id)}/geometry`, { method: 'PUT', body: geometry, signal });
      version = answer.version;
      saved.textContent = `Saved as version ${version}.`;
      listVersions();
    } catch (e) {
      saved.textContent = '';
      error.textContent = e.message;
    }
  }
  function listVersions() {
    versions.replaceChildren(...Array.from({ length: version }, (_, i) => version - i)
      .map((v) => h('option', { value: String(v) }, v === version ? `${v} (current)` : String(v))));
    showChanges();
  }
  async function showChanges() {
    const v = Number(versions.value);
    if (!v) return;
    try {
      const at = (n) => api(`/cameras/${encodeURIComponent(id)}/geometry?version=${n}`, { signal });
      const now = await at(v);
      const before = v > 1 ? (await at(v - 1)).geometry : {};
      const found = diff(before, now.geometry);
      const when = now.created_at ? ` (${new Date(now.created_at).toLocaleString()})` : '';
      changes.replaceChildren(h('li.note', {}, `Version ${v}${when} against ${v > 1 ? `version ${v - 1}` : 'nothing'}:`),
        ...(found.length ? found.map((c) => h(`li.${c.change}`, {}, `${c.change}: ${c.what}`)) : [h('li', {}, 'no change')]));
    } catch (e) {
      if (!signal.aborted) changes.replaceChildren(h('li.error', {}, e.message));
    }
  }
  versions.addEventListener('change', showChanges);

  async function load() {
    try {
      const current = await api(`/cameras/${encodeURIComponent(id)}/geometry`, { signal });
      geometry = normal(current.geometry);
      version = current.version;
      listVersions();
      changed();
    } catch (e) {
      if (!signal.aborted) error.textContent = e.message;
    }
    try {
      const { blob, headers } = await picture(`/cameras/${encodeURIComponent(id)}/snapshot.jpg`, signal);
      const image = await createImageBitmap(blob);
      const width = Number(headers.get('X-Source-Width')) || image.width;
      const height = Number(headers.get('X-Source-Height')) || image.height;
      source = { width, height };
      const shown = (headers.get('X-Source-Region') ?? '').split(',').map(Number);
      region = shown.length === 4 && shown.every((v) => Number.isFinite(v)) && shown[2] > 0 ? shown : null;
      background = image;
      const perPixel = region ? image.width / region[2] : image.width / width;
      canvas.width = Math.round(width * perPixel * 2);
      canvas.height = Math.round(height * perPixel * 2);
      saved.textContent = `Picture: frame ${headers.get('X-Frame-Seq') ?? '?'}; coordinates in camera pixels (${width} x ${height}).`;
    } catch (e) {
      if (!signal.aborted) saved.textContent = `No picture (${e.message}); coordinates assume ${source.width} x ${source.height}.`;
    }
    draw();
  }

  const tools = h('fieldset.tools#tools', {}, h('legend.note', {}, 'Tool'), ...toolInputs.map(([, labelled]) => labelled), finish);
  const form = h('div', {},
    h('h1', {}, `Geometry of ${id}`),
    h('p', {}, h('a', { href: `#/cameras/${encodeURIComponent(id)}` }, `← Camera ${id}`)),
    h('div.editor', {},
      h('section.panel', { 'aria-labelledby': 'drawing-title' }, h('h2#drawing-title', {}, 'Drawing'), tools, hint, canvas, error,
        h('p', {}, save), saved),
      h('div', {},
        h('section.panel', { 'aria-labelledby': 'elements-title' }, h('h2#elements-title', {}, 'Elements'), list),
        h('section.panel', { 'aria-labelledby': 'versions-title' }, h('h2#versions-title', {}, 'Versions'),
          h('div.row', {}, versions, h('div', {}, restore)), changes),
        h('section.panel', {}, h('details', {}, h('summary', {}, 'Geometry as JSON (edit by keyboard)'),
          h('label', { for: 'geometry-json' }, 'JSON (docs/ANALYTICS.md)'), json, h('p', {}, applyJson))))));
  hint.textContent = hints.select;
  needsRole('operator', form, save, finish, applyJson, restore, json, ...toolInputs.map(([input]) => input));
  main.replaceChildren(form);
  load();
  return () => controller.abort();
}
