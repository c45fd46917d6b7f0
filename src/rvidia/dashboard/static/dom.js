// Small DOM and formatting helpers. Everything the cluster sends is shown as text, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

// h("tag.class#id", {attr: value, onclick: fn}, ...children): an element. Children may be
// strings (text), nodes, null/false (skipped) or arrays of those.
export function h(spec, attrs, ...children) {
  return build(document.createElement(tagOf(spec)), spec, attrs, children);
}

// The same for SVG elements.
export function s(spec, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tagOf(spec)), spec, attrs, children);
}

function tagOf(spec) {
  return spec.split(/[.#]/)[0] || "div";
}

function build(el, spec, attrs, children) {
  for (const part of spec.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (key === "text") el.textContent = value;
      else if (key === "class") el.classList.add(...String(value).split(/\s+/).filter(Boolean));
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "value" && "value" in el) el.value = value;
      else if (key === "checked") el.checked = true;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
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

// Replace all children of el.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Keep el's children in step with items by key: rows are created once and updated in place, so
// buttons under the pointer survive live updates.
export function keyed(el, items, keyOf, create, update) {
  const old = new Map();
  for (const child of el.children) if (child.dataset.key !== undefined) old.set(child.dataset.key, child);
  let before = el.firstElementChild;
  for (const item of items) {
    const key = String(keyOf(item));
    let node = old.get(key);
    if (node) old.delete(key);
    else {
      node = create(item);
      node.dataset.key = key;
    }
    update(node, item);
    if (node !== before) el.insertBefore(node, before);
    else before = before.nextElementSibling;
  }
  for (const node of old.values()) node.remove();
}

export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

// ---------------------------------------------------------------- formatting

export function fmtInt(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export function fmtBytes(n) {
  if (!n && n !== 0) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function fmtPercent(p) {
  return p === null || p === undefined ? "–" : `${Math.round(p)}%`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.floor(seconds % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function parseTime(iso) {
  return iso ? Date.parse(iso) : null;
}

export function ago(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (t === null) return "–";
  const seconds = Math.max(0, (now - t) / 1000);
  if (seconds < 2) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(t).toLocaleDateString();
}

export function fmtTime(iso) {
  const t = parseTime(iso);
  return t === null ? "–" : new Date(t).toLocaleString();
}

// How long a job ran (or has run so far).
export function jobDuration(job, now = Date.now()) {
  const start = parseTime(job.started_at);
  if (start === null) return null;
  const end = parseTime(job.finished_at) ?? now;
  return Math.max(0, (end - start) / 1000);
}

export const ACTIVE_STATES = new Set(["queued", "running"]);
export const JOB_STATES = ["queued", "running", "succeeded", "failed", "cancelled"];

export function badge(state) {
  return h(`span.badge.state-${state}`, { text: state });
}

export function progressBar(progress, state) {
  const bar = h("div.progress", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
    h("div.progress-fill"), h("span.progress-text"));
  updateProgress(bar, progress, state);
  return bar;
}

export function updateProgress(bar, progress, state) {
  const total = progress?.total || 0;
  const done = progress?.done || 0;
  const pct = total ? Math.min(100, (100 * done) / total) : state === "succeeded" ? 100 : 0;
  const fill = bar.firstElementChild;
  fill.style.width = `${pct}%`;
  fill.className = `progress-fill state-${state}`;
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  const detail = progress?.detail;
  let text = total ? `${fmtInt(done)} / ${fmtInt(total)}` : "";
  if (detail && detail.rounds) text = `round ${detail.round}/${detail.rounds} · ${text}`;
  setText(bar.lastElementChild, text);
}

export function setTitle(title) {
  document.title = `${title} · RVIDIA`;
}

// Re-run fn when the element's width changes (charts redraw to fit); returns a disconnect function.
export function onResize(el, fn) {
  let last = el.clientWidth;
  const ro = new ResizeObserver(() => {
    if (el.clientWidth !== last) {
      last = el.clientWidth;
      fn();
    }
  });
  ro.observe(el);
  return () => ro.disconnect();
}
