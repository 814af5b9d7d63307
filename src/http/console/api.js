// The API as the console uses it: the signed-in token (session storage), JSON calls with the
// API's own error messages, the live MJPEG view read with fetch() streaming (an <img src> cannot
// send the token), the live event stream (Server-Sent Events read the same way), and a small
// element builder.

const TOKEN_KEY = 'its-console-token';

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ''; },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  },
  /** `{name, role}` of the signed-in caller, from GET /api/v1/me. */
  me: null,
};

const RANK = { viewer: 0, operator: 1, admin: 2 };

/** Whether the signed-in caller has at least `role`. */
export function can(role) {
  return session.me !== null && RANK[session.me.role] >= RANK[role];
}

/** An error the API answered: its status and its `{"error": ...}` message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  return h;
}

async function failure(response) {
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, message);
}

/** `fetch` of an `/api/v1` path with the token; JSON in and out; throws ApiError. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, signal, cache: 'no-store', headers: headers() };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const response = await fetch(`/api/v1${path}`, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

/** A picture of the API as a blob plus its response headers. */
export async function picture(path, signal) {
  const response = await fetch(`/api/v1${path}`, { headers: headers(), cache: 'no-store', signal });
  if (!response.ok) throw await failure(response);
  return { blob: await response.blob(), headers: response.headers };
}

function indexOf(bytes, pattern, from = 0) {
  outer: for (let i = from; i <= bytes.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

const CRLF2 = new TextEncoder().encode('\r\n\r\n');
const BOUNDARY = new TextEncoder().encode('--frame');

/**
 * Reads a `multipart/x-mixed-replace; boundary=frame` stream of JPEG parts and calls
 * `onFrame(blob, seq)` for each; resolves when the stream ends, throws ApiError on a refusal.
 */
export async function readMjpeg(path, onFrame, signal) {
  const response = await fetch(`/api/v1${path}`, { headers: headers(), cache: 'no-store', signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    for (;;) {
      const start = indexOf(buffer, BOUNDARY);
      if (start < 0) break;
      const headEnd = indexOf(buffer, CRLF2, start);
      if (headEnd < 0) break;
      const head = new TextDecoder().decode(buffer.subarray(start, headEnd));
      const length = Number((/content-length:\s*(\d+)/i.exec(head) || [])[1]);
      const seq = Number((/x-frame-seq:\s*(\d+)/i.exec(head) || [])[1]);
      if (!Number.isFinite(length)) throw new Error('live view: a part without Content-Length');
      const bodyStart = headEnd + CRLF2.length;
      if (buffer.length < bodyStart + length) break;
      onFrame(new Blob([buffer.slice(bodyStart, bodyStart + length)], { type: 'image/jpeg' }), seq);
      buffer = buffer.slice(bodyStart + length);
    }
  }
}

/**
 * Reads `/api/v1/events/stream` (with `query`) and calls `onEvent(type, data)` per event;
 * resolves when the stream ends, throws ApiError on a refusal.
 */
export async function readEvents(query, onEvent, signal) {
  const response = await fetch(`/api/v1/events/stream?${query}`, { headers: headers(), cache: 'no-store', signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    text += value;
    let end;
    while ((end = text.indexOf('\n\n')) >= 0) {
      const frame = text.slice(0, end);
      text = text.slice(end + 2);
      let type = 'message';
      const data = [];
      for (const line of frame.split('\n')) {
        if (line.startsWith('event:')) type = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length) {
        try { onEvent(type, JSON.parse(data.join('\n'))); } catch (_) { /* not an event */ }
      }
    }
  }
}

/**
 * `h('tag.class#id', {attr: value, onclick: fn}, ...children)`: an element. Children are nodes
 * or text (never parsed as HTML).
 */
export function h(spec, attrs = {}, ...children) {
  const [, tag, rest] = /^([a-z0-9]+)(.*)$/i.exec(spec);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'text') el.textContent = value;
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Disables `controls` for a caller below `role`, saying why (the reason is also read out). */
export function needsRole(role, container, ...controls) {
  if (can(role)) return;
  const reason = h('p.readonly', { id: `why-${Math.random().toString(36).slice(2)}` }, `Read only: needs the ${role} role.`);
  for (const control of controls) {
    control.disabled = true;
    control.setAttribute('aria-describedby', reason.id);
    control.title = `needs the ${role} role`;
  }
  container.prepend(reason);
}

/** A number for a table: fixed decimals, or a dash. */
export function fmt(value, digits = 1) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '–';
}
