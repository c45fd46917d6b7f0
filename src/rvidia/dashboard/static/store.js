// What the dashboard knows of the cluster: filled over REST, kept current by /ws/events.

import { api } from "./api.js";
import { ACTIVE_STATES, parseTime } from "./dom.js";

const JOB_PAGE = 50;
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export const store = {
  me: null,
  workers: new Map(),
  jobs: new Map(),
  moreJobs: false,
  stats: null,
  // Chunks finished per server second: {start, counts}; `offset` maps this browser's clock onto it.
  rate: { start: 0, counts: [], offset: 0 },
  connection: "offline",
  listeners: new Set(),
  chunkListeners: new Set(),
};

let changeQueued = false;
let changedKinds = new Set();

// Tell the views something changed (batched into one call per animation frame).
export function changed(kind) {
  changedKinds.add(kind);
  if (changeQueued) return;
  changeQueued = true;
  requestAnimationFrame(() => {
    changeQueued = false;
    const kinds = changedKinds;
    changedKinds = new Set();
    for (const fn of [...store.listeners]) fn(kinds);
  });
}

export function subscribe(fn) {
  store.listeners.add(fn);
  return () => store.listeners.delete(fn);
}

export function onChunk(fn) {
  store.chunkListeners.add(fn);
  return () => store.chunkListeners.delete(fn);
}

export function reset() {
  store.me = null;
  store.workers.clear();
  store.jobs.clear();
  store.stats = null;
  store.rate = { start: 0, counts: [], offset: 0 };
  changed("all");
}

// Events that arrive while a reload is in flight, applied again on top of what it brings back:
// the REST answers may be older than they are (a job that ended meanwhile would stay "running").
let heldEvents = null;

// The whole state over REST: at sign-in and after every (re)connection of the event stream.
export async function reload() {
  heldEvents = [];
  let workers, jobs, stats;
  try {
    [workers, jobs, stats] = await Promise.all([
      api("/workers"),
      api(`/jobs?limit=${JOB_PAGE}`),
      api("/stats?seconds=300"),
    ]);
  } catch (err) {
    heldEvents = null;
    throw err;
  }
  store.workers = new Map(workers.map((w) => [w.id, w]));
  const kept = new Map(jobs.map((j) => [j.id, j]));
  store.moreJobs = jobs.length === JOB_PAGE;
  store.jobs = kept;
  setStats(stats);
  const again = heldEvents;
  heldEvents = null;
  for (const event of again) if (event.type !== "chunk") applyEvent(event);
  changed("all");
}

export async function loadMoreJobs() {
  const oldest = sortedJobs().at(-1);
  if (!oldest) return;
  const jobs = await api(`/jobs?limit=${JOB_PAGE}&before=${encodeURIComponent(oldest.id)}`);
  for (const j of jobs) if (!store.jobs.has(j.id)) store.jobs.set(j.id, j);
  store.moreJobs = jobs.length === JOB_PAGE;
  changed("jobs");
}

function setStats(stats) {
  store.stats = stats;
  const series = stats.finished_per_second;
  const end = series.start + series.counts.length - 1;
  store.rate = { start: series.start, counts: series.counts.slice(), offset: end - Math.floor(Date.now() / 1000) };
}

let statsTimer = null;
function refreshStatsSoon() {
  if (statsTimer) return;
  statsTimer = setTimeout(async () => {
    statsTimer = null;
    try {
      setStats(await api("/stats?seconds=300"));
      changed("stats");
    } catch (_) {
      // the next event or reconnection tries again
    }
  }, 300);
}

export function serverSecond() {
  return Math.floor(Date.now() / 1000) + store.rate.offset;
}

// Chunks finished per second for the `seconds` seconds up to now (oldest first).
export function rateSeries(seconds) {
  const now = serverSecond();
  const out = new Array(seconds).fill(0);
  const { start, counts } = store.rate;
  for (let i = 0; i < seconds; i++) {
    const second = now - seconds + 1 + i;
    const k = second - start;
    if (k >= 0 && k < counts.length) out[i] = counts[k];
  }
  return out;
}

function countFinished() {
  const now = serverSecond();
  const rate = store.rate;
  if (!rate.counts.length) {
    rate.start = now;
  }
  let k = now - rate.start;
  while (k >= rate.counts.length) rate.counts.push(0);
  if (k < 0) return;
  rate.counts[k] += 1;
  if (rate.counts.length > 900) {
    const drop = rate.counts.length - 600;
    rate.counts.splice(0, drop);
    rate.start += drop;
  }
  if (store.stats) store.stats.chunks_finished += 1;
}

// One /ws/events message.
export function applyEvent(event) {
  if (heldEvents && heldEvents.length < 10000) heldEvents.push(event);
  if (event.type === "worker") {
    const { type, ...worker } = event;
    store.workers.set(worker.id, worker);
    changed("workers");
  } else if (event.type === "job") {
    const { type, ...job } = event;
    const old = store.jobs.get(job.id);
    // An event sent before a REST reload may arrive after it: never step a job back from its end.
    if (old && TERMINAL.has(old.state) && ACTIVE_STATES.has(job.state)) return;
    store.jobs.set(job.id, { ...old, ...job });
    if (!old || old.state !== job.state) refreshStatsSoon();
    changed("jobs");
  } else if (event.type === "chunk") {
    if (event.state === "done") {
      countFinished();
      changed("rate");
    }
    for (const fn of [...store.chunkListeners]) fn(event);
  }
}

export function sortedJobs() {
  return [...store.jobs.values()].sort((a, b) => {
    const ta = parseTime(a.created_at) || 0;
    const tb = parseTime(b.created_at) || 0;
    return tb - ta || (a.id < b.id ? 1 : -1);
  });
}

/** Cores of the machines behind these workers: workers on one host share its cores, so each
 * host counts once (its largest report). */
export function hostCores(workers) {
  const byHost = new Map();
  for (const w of workers) byHost.set(w.host || w.id, Math.max(byHost.get(w.host || w.id) || 0, w.cores || 0));
  let total = 0;
  for (const n of byHost.values()) total += n;
  return total;
}

export function onlineWorkers() {
  return [...store.workers.values()].filter((w) => w.state !== "lost");
}

export function workerName(id) {
  const w = store.workers.get(id);
  return w ? w.name : id;
}
