// The console: sign-in, hash routing between pages, and the cameras page. Each page renders
// into <main> and returns a function that stops what it started (timers, streams).

import { api, ApiError, can, fmt, h, needsRole, session } from './api.js';
import { cameraPage } from './camera.js';
import { editorPage } from './editor.js';
import { systemPage } from './system.js';

const main = document.getElementById('main');
let stop = () => {};

function showWho() {
  const who = document.getElementById('who');
  const out = document.getElementById('sign-out');
  who.textContent = session.me ? `${session.me.name} (${session.me.role})` : '';
  out.hidden = !session.me || session.me.name === '(anonymous)';
}

/** Learns who the stored token belongs to; false when there is none or the API refuses it. */
async function whoAmI() {
  try {
    session.me = await api('/me');
  } catch (e) {
    session.me = null;
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
  }
  showWho();
  return session.me !== null;
}

function signInPage() {
  const token = h('input#token', { type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'signin-error' });
  const error = h('p.error#signin-error', { role: 'alert' });
  const form = h('form.panel.signin', {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = '';
      session.token = token.value.trim();
      try {
        session.me = await api('/me');
      } catch (e) {
        // The API's own words: "invalid bearer token", "malformed Authorization header: ...".
        session.token = '';
        session.me = null;
        error.textContent = e.message;
        return;
      } finally {
        showWho();
      }
      if (!location.hash || location.hash === '#/signin') location.hash = '#/cameras'; else route();
    },
  },
  h('h1', {}, 'Sign in'),
  h('p.note', {}, 'Paste an API token (scripts/demo.sh prints one). It is kept in this tab only.'),
  h('label', { for: 'token' }, 'Token'), token, error,
  h('p', {}, h('button#sign-in', { type: 'submit' }, 'Sign in')));
  main.replaceChildren(form);
  token.focus();
  return () => {};
}

// --- cameras -------------------------------------------------------------------------------------

const FIELDS = ['id', 'name', 'url', 'fps', 'replay', 'geometry'];

/** The field an API message is about (camera_spec.rs words each one by its field first). */
function fieldOf(message) {
  const m = /^(id|name|url|fps|replay|geometry|rtsp_transport)\b/.exec(message);
  if (m) return m[1] === 'rtsp_transport' ? 'url' : m[1];
  if (/^camera .* already exists/.test(message)) return 'id';
  if (/^name and url/.test(message)) return 'url';
  return null;
}

function camerasPage() {
  const rows = h('tbody');
  const status = h('p.note', { 'aria-live': 'polite' });
  const previous = new Map();
  const table = h('div.scroll', {}, h('table#cameras', {},
    h('caption.note', {}, 'Refreshed every 2 s. Frames/s analysed from the change of frames processed.'),
    h('thead', {}, h('tr', {}, ...['Camera', 'State', 'Frames/s', 'Dropped', 'Breaker', 'Geometry', 'Last error', '']
      .map((t) => h('th', { scope: 'col', class: ['Frames/s', 'Dropped', 'Geometry'].includes(t) ? 'num' : undefined }, t)))),
    rows));

  async function refresh() {
    try {
      const { cameras } = await api('/cameras');
      const now = performance.now();
      rows.replaceChildren(...cameras.map((c) => {
        const s = c.status || {};
        const before = previous.get(c.id);
        const rate = before && s.frames_processed !== undefined
          ? (s.frames_processed - before.frames) / ((now - before.at) / 1000) : undefined;
        previous.set(c.id, { frames: s.frames_processed, at: now });
        const remove = h('button.danger', {
          type: 'button', 'aria-label': `Remove camera ${c.id}`,
          onclick: async () => {
            if (!confirm(`Remove camera ${c.id}?`)) return;
            try { await api(`/cameras/${encodeURIComponent(c.id)}`, { method: 'DELETE' }); refresh(); } catch (e) { status.textContent = e.message; }
          },
        }, 'Remove');
        if (!can('operator')) { remove.disabled = true; remove.title = 'needs the operator role'; }
        return h('tr', { 'data-camera': c.id },
          h('th', { scope: 'row' }, h('a', { href: `#/cameras/${encodeURIComponent(c.id)}` }, c.id), c.name ? h('div.note', {}, c.name) : null),
          h('td', {}, s.state ? h(`span.badge.${s.state}`, {}, s.state) : h('span.note', {}, c.owner ? `on ${c.owner}` : 'moving')),
          h('td.num', { 'data-field': 'fps' }, fmt(rate)),
          h('td.num', {}, s.frames_dropped ?? '–'),
          h('td', {}, s.breaker ? h(`span.badge.${s.breaker}`, {}, s.breaker) : '–'),
          h('td.num', {}, s.geometry_version ?? '–'),
          h('td', {}, s.last_error || ''),
          h('td', {}, h('a', { href: `#/cameras/${encodeURIComponent(c.id)}/geometry` }, 'Geometry'), ' ', remove));
      }));
      if (!cameras.length) rows.replaceChildren(h('tr', {}, h('td', { colspan: 8 }, 'No camera yet.')));
      status.textContent = '';
    } catch (e) {
      status.textContent = e.message;
    }
  }

  const inputs = {
    id: h('input#cam-id', { required: true, placeholder: 'e.g. overpass', autocomplete: 'off' }),
    name: h('input#cam-name', { autocomplete: 'off' }),
    url: h('input#cam-url', { required: true, placeholder: 'rtsp://host/stream or file:///media/clip.avi', autocomplete: 'off' }),
    fps: h('input#cam-fps', { type: 'number', min: '0.1', max: '120', step: 'any', placeholder: 'default' }),
    geometry: h('textarea#cam-geometry', { rows: 4, placeholder: '{"lines": [{"id": "l1", "a": [0, 150], "b": [320, 150]}]}' }),
  };
  const loop = h('input#cam-loop', { type: 'checkbox' });
  const realtime = h('input#cam-realtime', { type: 'checkbox', defaultChecked: true });
  const errors = Object.fromEntries(FIELDS.map((f) => [f, h(`p.field-error#cam-${f}-error`, { role: 'alert' })]));
  const formError = h('p.error#cam-error', { role: 'alert' });
  for (const [f, input] of Object.entries(inputs)) input.setAttribute('aria-describedby', `cam-${f}-error`);
  const field = (f, label, extra) => h('div', {}, h('label', { for: `cam-${f}` }, label), inputs[f], extra, errors[f]);
  const submit = h('button#cam-add', { type: 'submit' }, 'Add camera');

  const form = h('form.panel#add-camera', {
    'aria-labelledby': 'add-title',
    // The API validates and its messages appear by the fields (the browser's own would hide them).
    novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      for (const f of FIELDS) { errors[f].textContent = ''; inputs[f]?.removeAttribute('aria-invalid'); }
      formError.textContent = '';
      const body = { id: inputs.id.value.trim(), url: inputs.url.value.trim() };
      if (inputs.name.value.trim()) body.name = inputs.name.value.trim();
      if (inputs.fps.value !== '') body.fps = Number(inputs.fps.value);
      if (body.url.startsWith('file:')) body.replay = { loop: loop.checked, realtime: realtime.checked };
      if (inputs.geometry.value.trim()) {
        try { body.geometry = JSON.parse(inputs.geometry.value); } catch (e) {
          errors.geometry.textContent = `geometry is not JSON: ${e.message}`;
          inputs.geometry.setAttribute('aria-invalid', 'true');
          return;
        }
      }
      try {
        await api('/cameras', { method: 'POST', body });
        form.reset();
        formError.textContent = '';
        status.textContent = `Camera ${body.id} added.`;
        refresh();
      } catch (e) {
        if (!(e instanceof ApiError) || e.status !== 400 && e.status !== 409) { formError.textContent = e.message; return; }
        for (const message of e.message.split('; ')) {
          const f = fieldOf(message);
          const target = f ? errors[f] : formError;
          target.textContent = target.textContent ? `${target.textContent}; ${message}` : message;
          if (f && inputs[f]) inputs[f].setAttribute('aria-invalid', 'true');
        }
      }
    },
  },
  h('h2#add-title', {}, 'Add a camera'),
  h('div.row', {}, field('id', 'Id'), field('name', 'Name'), field('fps', 'Frames/s analysed')),
  field('url', 'URL'),
  h('div.row', {},
    h('label', { for: 'cam-loop' }, loop, ' Loop a file'),
    h('label', { for: 'cam-realtime' }, realtime, ' Play a file in real time'),
    errors.replay),
  field('geometry', 'Geometry (JSON, optional: draw it later in the editor)'),
  formError,
  h('p', {}, submit));
  needsRole('operator', form, submit, ...Object.values(inputs), loop, realtime);

  main.replaceChildren(h('h1', {}, 'Cameras'), h('section.panel', { 'aria-label': 'Cameras' }, status, table), form);
  refresh();
  const timer = setInterval(refresh, 2000);
  return () => clearInterval(timer);
}

// --- routing -------------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/cameras\/([^/]+)\/geometry$/, (m) => editorPage(main, decodeURIComponent(m[1])), 'cameras'],
  [/^#\/cameras\/([^/]+)$/, (m) => cameraPage(main, decodeURIComponent(m[1])), 'cameras'],
  [/^#\/cameras$/, () => camerasPage(), 'cameras'],
  [/^#\/system$/, () => systemPage(main), 'system'],
];

let routing = 0;

async function route() {
  const generation = ++routing;
  stop();
  stop = () => {};
  if (!session.me) {
    try { await whoAmI(); } catch (e) { main.replaceChildren(h('p.error', { role: 'alert' }, e.message)); return; }
    // A later navigation while this one waited renders instead.
    if (generation !== routing) return;
  }
  if (!session.me || location.hash === '#/signin') {
    for (const a of document.querySelectorAll('[data-nav]')) a.removeAttribute('aria-current');
    stop = signInPage();
    return;
  }
  const hash = location.hash || '#/cameras';
  for (const [pattern, page, nav] of ROUTES) {
    const m = pattern.exec(hash);
    if (!m) continue;
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    stop = page(m) || (() => {});
    main.focus({ preventScroll: true });
    return;
  }
  location.hash = '#/cameras';
}

document.getElementById('sign-out').addEventListener('click', () => {
  session.token = '';
  session.me = null;
  showWho();
  location.hash = '#/signin';
  route();
});
window.addEventListener('hashchange', route);
route();
