// Overview: the cluster at a glance, and chunks finished per second over the last five minutes.

import { rateChart } from "../charts.js";
import { JOB_STATES, fill, fmtInt, h, onResize, setText, setTitle } from "../dom.js";
import { hostCores, onlineWorkers, rateSeries, sortedJobs, store } from "../store.js";
import { jobRow, jobRowUpdate, jobsTable } from "./jobs.js";
import { keyed } from "../dom.js";

const WINDOW = 300;

export function overviewView(main) {
  setTitle("Overview");
  const stat = (id, label) => {
    const value = h("div.stat-value", { id: `stat-${id}` }, "–");
    const sub = h("div.stat-sub");
    return { el: h("section.stat", { "aria-labelledby": `stat-${id}-label` },
      h("h2.stat-label", { id: `stat-${id}-label`, text: label }), value, sub), value, sub };
  };
  const workers = stat("workers", "Workers online");
  const cores = stat("cores", "Cores");
  const slots = stat("slots", "Slots");
  const running = stat("running", "Chunks running");
  const chips = h("div.state-chips#jobs-by-state");
  const rateNow = h("span.muted");
  const chart = h("div.chart-box#rate-chart");
  const recent = h("tbody");
  const empty = h("p.muted", { hidden: true }, "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one"), ".");
  fill(main,
    h("div.page-head", null, h("h1", null, "Overview")),
    h("div.stats", null, workers.el, cores.el, slots.el, running.el),
    h("section.card", { "aria-labelledby": "jobs-state-title" },
      h("h2#jobs-state-title", null, "Jobs by state"), chips),
    h("section.card", { "aria-labelledby": "rate-title" },
      h("div.card-head", null, h("h2#rate-title", null, "Chunks finished per second"), rateNow),
      chart),
    h("section.card", { "aria-labelledby": "recent-title" },
      h("div.card-head", null, h("h2#recent-title", null, "Recent jobs"), h("a", { href: "#/jobs" }, "All jobs →")),
      jobsTable(recent), empty));

  function drawStats() {
    const online = onlineWorkers();
    const lost = store.workers.size - online.length;
    setText(workers.value, fmtInt(online.length));
    setText(workers.sub, lost ? `${lost} lost` : online.length ? `${online.filter((w) => w.state === "busy").length} busy` : "none yet");
    setText(cores.value, fmtInt(hostCores(online)));
    setText(cores.sub, "of the online workers' machines");
    const totalSlots = online.reduce((n, w) => n + (w.slots || 0), 0);
    const runningNow = online.reduce((n, w) => n + (w.running || 0), 0);
    setText(slots.value, fmtInt(totalSlots));
    setText(slots.sub, totalSlots ? `${Math.round((100 * runningNow) / totalSlots)}% in use` : "");
    setText(running.value, fmtInt(runningNow));
    setText(running.sub, store.stats ? `${fmtInt(store.stats.chunks_finished)} finished since start` : "");
    const counts = store.stats ? store.stats.jobs : {};
    keyed(chips, JOB_STATES, (st) => st,
      (st) => h(`a.chip.state-${st}`, { href: "#/jobs", dataset: { state: st } }, h("span.chip-n"), h("span.chip-label", { text: st })),
      (el, st) => setText(el.firstElementChild, fmtInt(counts[st] || 0)));
  }

  function drawChart() {
    const series = rateSeries(WINDOW);
    rateChart(chart, series);
    const last10 = series.slice(-10).reduce((a, b) => a + b, 0) / 10;
    setText(rateNow, `${last10.toFixed(1)}/s over the last 10 s`);
  }

  function drawJobs() {
    const jobs = sortedJobs().slice(0, 6);
    keyed(recent, jobs, (j) => j.id, jobRow, jobRowUpdate);
    empty.hidden = jobs.length > 0;
  }

  drawStats();
  drawChart();
  drawJobs();
  const tick = setInterval(() => { drawChart(); drawJobs(); }, 1000); // the window slides; durations tick
  const stopResize = onResize(chart, drawChart);
  return {
    update(kinds) {
      drawStats();
      if (kinds.has("jobs") || kinds.has("all")) drawJobs();
      if (kinds.has("rate") || kinds.has("stats") || kinds.has("all")) drawChart();
    },
    destroy() {
      clearInterval(tick);
      stopResize();
    },
  };
}
