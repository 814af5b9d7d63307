// The system page (admin): circuit breakers, connection pools, devices and their models, the
// supervised children, event delivery (outbox), and the cluster's nodes. Refreshed every 5 s.

import { api, can, h } from './api.js';

/** A value as text: numbers and strings as they are, anything else as compact JSON. */
function text(value) {
  if (value === null || value === undefined) return '–';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A table of `rows` (objects) with a column per key found in any row. */
function table(caption, rows) {
  if (!Array.isArray(rows) || !rows.length) return h('p.note', {}, `${caption}: none.`);
  const FIRST = ['name', 'id', 'state', 'alive'];
  const keys = [...new Set(rows.flatMap((r) => (r && typeof r === 'object' ? Object.keys(r) : ['value'])))]
    .sort((a, b) => (FIRST.indexOf(a) + 1 || 99) - (FIRST.indexOf(b) + 1 || 99));
  return h('div.scroll', {}, h('table', {}, h('caption.note', {}, caption),
    h('thead', {}, h('tr', {}, ...keys.map((k) => h('th', { scope: 'col' }, k.replaceAll('_', ' '))))),
    h('tbody', {}, ...rows.map((r) => h('tr', {}, ...keys.map((k) => {
      const v = r && typeof r === 'object' ? r[k] : r;
      if (k === 'state' && typeof v === 'string') return h('td', {}, h(`span.badge.${v}`, {}, v));
      // A nested breaker or the like: its state, the rest on hover.
      if (v && typeof v === 'object' && typeof v.state === 'string') {
        return h('td', { title: JSON.stringify(v) }, h(`span.badge.${v.state}`, {}, v.state), v.name ? ` ${v.name}` : '');
      }
      return h('td', {}, text(v));
    }))))));
}

/** An object as a definition list (nested objects as JSON). */
function pairs(object) {
  if (!object || typeof object !== 'object') return h('p', {}, text(object));
  return h('dl.kv', {}, ...Object.entries(object).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, text(v))]));
}

const section = (id, title, ...content) => h('section.panel', { 'aria-labelledby': id }, h(`h2#${id}`, {}, title), ...content);

export function systemPage(main) {
  if (!can('admin')) {
    main.replaceChildren(h('h1', {}, 'System'),
      h('p.note#system-denied', {}, 'Read only for admins: the system view needs the admin role.'));
    return () => {};
  }
  const controller = new AbortController();
  const body = h('div#system', {}, h('p.note', {}, 'Loading…'));
  const status = h('p.note', { 'aria-live': 'polite' });
  async function refresh() {
    try {
      const [system, cluster] = await Promise.all([
        api('/system', { signal: controller.signal }),
        api('/cluster', { signal: controller.signal }).catch((e) => ({ error: e.message })),
      ]);
      const supervisor = system.supervisor || {};
      const nodes = (cluster.nodes || []).map((n) => ({ ...(n.row || {}), ...Object.fromEntries(Object.entries(n).filter(([k]) => k !== 'row')) }));
      body.replaceChildren(
        section('sys-breakers', 'Circuit breakers', table('Dependencies and models', system.breakers),
          table('Cameras', system.camera_breakers)),
        section('sys-pools', 'Pools', Array.isArray(system.pools) ? table('Connection and work pools', system.pools) : pairs(system.pools)),
        section('sys-devices', 'Devices', table('Inference devices', system.devices)),
        section('sys-children', 'Supervised children',
          h('p', {}, `Escalated: ${supervisor.escalated ? text(supervisor.escalated) : 'no'}`),
          table('Pipeline', supervisor.children),
          table('Cameras', supervisor.cameras?.children)),
        section('sys-outbox', 'Event delivery (outbox)', pairs(system.events)),
        section('sys-cluster', 'Cluster nodes', cluster.error ? h('p.error', {}, cluster.error) : table('Nodes', nodes),
          cluster.error ? null : pairs(Object.fromEntries(Object.entries(cluster).filter(([k]) => k !== 'nodes')))));
      status.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (e) {
      if (!controller.signal.aborted) status.textContent = e.message;
    }
  }
  main.replaceChildren(h('h1', {}, 'System'), status, body);
  refresh();
  const timer = setInterval(refresh, 5000);
  return () => { clearInterval(timer); controller.abort(); };
}
