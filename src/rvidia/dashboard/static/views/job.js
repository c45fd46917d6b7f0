// One job: parameters, progress, chunks per worker, a Gantt timeline, its error or its result.

import { api, blobUrl } from "../api.js";
import { gantt, roundsChart } from "../charts.js";
import { ACTIVE_STATES, badge, fill, fmtDuration, fmtInt, fmtTime, h, jobDuration, keyed, onResize, progressBar,
  setText, setTitle, updateProgress } from "../dom.js";
import { TERMINAL, onChunk, store, workerName } from "../store.js";
import { cancelJob } from "./jobs.js";

const CHUNK_LIMIT = 5000;

export function jobView(main, id) {
  setTitle(`Job ${id}`);
  let job = null;
  let chunks = new Map(); // "stage:index" -> chunk
  let chunksComplete = true; // false when the job has more chunks than one page
  let destroyed = false;
  let ganttQueued = false;

  const title = h("h1", null, "Job ", h("span.mono", { text: id }));
  const headBadge = h("span.head-badge");
  const cancelBtn = h("button.btn.btn-danger#cancel-job", { type: "button", hidden: true }, "Cancel job");
  cancelBtn.addEventListener("click", () => cancelJob(id, cancelBtn).then(() => refresh()));
  const again = h("a.btn", { href: "#/submit" }, "Submit another");
  const body = h("div.job-body", null, h("p.muted", null, "Loading…"));
  fill(main,
    h("div.page-head", null, h("div.title-row", null, title, headBadge),
      h("div.page-actions", null, again, cancelBtn)),
    body);

  // The parts, built once the job is loaded.
  const parts = {};

  function build() {
    parts.meta = h("dl.meta");
    parts.reason = h("div.callout.info#job-reason", { hidden: true });
    parts.error = h("section.card.error-card#job-error", { hidden: true, "aria-labelledby": "error-title" },
      h("h2#error-title", null, "Error"), h("pre.error-text"));
    parts.progressBar = progressBar(job.progress, job.state);
    parts.progressText = h("p.muted.progress-counts");
    parts.result = h("section.card#job-result", { hidden: true, "aria-labelledby": "result-title" },
      h("h2#result-title", null, "Result"), h("div.result-body"));
    parts.outputs = h("section.card#job-outputs", { hidden: true, "aria-labelledby": "outputs-title" },
      h("h2#outputs-title", null, "Outputs"), h("ul.outputs"));
    parts.params = h("section.card", { "aria-labelledby": "params-title" },
      h("h2#params-title", null, "Parameters"), h("dl.params"));
    parts.perWorker = h("ul.per-worker");
    parts.gantt = h("div.chart-box.gantt-box#gantt");
    fill(body,
      parts.reason,
      h("section.card", { "aria-labelledby": "progress-title" },
        h("h2#progress-title", null, "Progress"), parts.progressBar, parts.progressText, parts.meta),
      parts.error,
      parts.result,
      parts.outputs,
      h("div.two-col", null,
        parts.params,
        h("section.card", { "aria-labelledby": "perworker-title" },
          h("h2#perworker-title", null, "Chunks per worker"), parts.perWorker)),
      h("section.card", { "aria-labelledby": "timeline-title" },
        h("div.card-head", null, h("h2#timeline-title", null, "Timeline"),
          h("span.legend", null, ["done", "running", "pending", "cancelled"].map((st) =>
            h("span.legend-item", null, h(`span.swatch.bar-${st}`), st === "pending" ? "failed / retried" : st)))),
        parts.gantt));
    parts.stopResize = onResize(parts.gantt, drawGantt);
  }

  function drawHead() {
    fill(headBadge, badge(job.state));
    cancelBtn.hidden = !ACTIVE_STATES.has(job.state);
    again.href = `#/submit/${encodeURIComponent(job.kind)}`;
    setTitle(`${job.kind} ${job.id}`);
  }

  function drawProgress() {
    updateProgress(parts.progressBar, job.progress, job.state);
    const p = job.progress || {};
    const bits = [`${fmtInt(p.done)} of ${fmtInt(p.total)} chunks done`];
    if (p.running) bits.push(`${fmtInt(p.running)} running`);
    if (p.failed) bits.push(`${fmtInt(p.failed)} failed attempts`);
    const rounds = job.params && job.params.rounds;
    if (job.kind === "train" && rounds) bits.push(`round ${Math.min(job.stage + 1, rounds)} of ${rounds}`);
    else if (job.stage) bits.push(`stage ${job.stage + 1}`);
    setText(parts.progressText, bits.join(" · "));
    const duration = jobDuration(job);
    const rows = [["Kind", job.kind], ["Submitted", fmtTime(job.created_at)], ["Started", fmtTime(job.started_at)],
      ["Finished", fmtTime(job.finished_at)], ["Duration", duration === null ? "–" : fmtDuration(duration)]];
    if (job.priority) rows.push(["Priority", String(job.priority)]);
    if (job.max_attempts) rows.push(["Max attempts", String(job.max_attempts)]);
    if (job.timeout) rows.push(["Timeout per chunk", fmtDuration(job.timeout)]);
    fill(parts.meta, rows.map(([k, v]) => h("div", null, h("dt", { text: k }), h("dd", { text: v }))));
    parts.reason.hidden = !job.reason || !ACTIVE_STATES.has(job.state);
    setText(parts.reason, job.reason ? `Waiting: ${job.reason}` : "");
  }

  function drawStatic() {
    parts.error.hidden = !job.error;
    setText(parts.error.querySelector("pre"), job.error || "");
    const params = Object.entries(job.params || {});
    const inputs = Object.entries(job.inputs || {});
    fill(parts.params.querySelector("dl"),
      params.length || inputs.length ? null : h("p.muted", null, "Defaults only."),
      params.map(([k, v]) => h("div", null, h("dt.mono", { text: k }),
        h("dd.mono", { text: typeof v === "string" ? v : JSON.stringify(v) }))),
      inputs.map(([k, blob]) => h("div", null, h("dt.mono", { text: `${k} (input)` }),
        h("dd", null, h("a.mono", { href: blobUrl(blob), download: k, text: `${blob.slice(0, 12)}…` })))));
    const outputs = Object.entries(job.outputs || {});
    parts.outputs.hidden = outputs.length === 0;
    fill(parts.outputs.querySelector("ul"), outputs.map(([name, blob]) =>
      h("li", null, h("a.download", { href: blobUrl(blob), download: name }, "⬇ ", name),
        h("span.muted.mono", { text: ` ${blob.slice(0, 12)}…` }))));
    drawResult();
  }

  function drawResult() {
    const box = parts.result.querySelector(".result-body");
    const r = job.result;
    const history = (r && r.history) || job.progress?.detail?.history;
    const content = [];
    if (job.kind === "montecarlo" && r && typeof r.pi === "number") {
      content.push(h("div.big-result", null, h("span.big-label", null, "π ≈ "),
        h("span.big-value#result-value", { text: r.pi.toPrecision(10) })),
      h("p.muted", null, `${fmtInt(r.inside)} of ${fmtInt(r.samples)} points inside the quarter circle · ` +
        `off by ${Math.abs(r.pi - Math.PI).toExponential(2)}`));
    }
    if (job.kind === "train" && history && history.length) {
      if (r && typeof r.test_accuracy === "number") {
        content.push(h("div.big-result", null, h("span.big-label", null, "Test accuracy "),
          h("span.big-value#result-value", { text: `${(100 * r.test_accuracy).toFixed(2)}%` })));
      }
      const loss = h("div.chart-box#loss-chart");
      const acc = h("div.chart-box#accuracy-chart");
      content.push(h("div.two-col.charts", null, loss, acc));
      requestAnimationFrame(() => {
        roundsChart(loss, [
          { label: "training loss", values: history.map((e) => e.loss) },
          { label: "test loss", values: history.map((e) => e.test_loss) },
        ], { title: "Loss per round" });
        roundsChart(acc, [{ label: "test accuracy", values: history.map((e) => e.accuracy) }],
          { title: "Accuracy per round", percent: true });
      });
    }
    const image = job.outputs && (job.outputs["image.png"] || Object.entries(job.outputs).find(([n]) => /\.(png|jpe?g|gif|webp)$/i.test(n))?.[1]);
    if (image && job.state === "succeeded") {
      const p = job.params || {};
      content.push(h("a.image-link", { href: blobUrl(image), target: "_blank", rel: "noopener" },
        h("img.result-image#result-image", { src: blobUrl(image), alt: `Rendered image${p.width ? ` (${p.width}×${p.height} ${p.scene || ""})` : ""}` })));
    }
    const csv = job.outputs && Object.entries(job.outputs).find(([n]) => n.endsWith(".csv"));
    if (csv && job.state === "succeeded") {
      const table = h("div.table-wrap.csv-preview");
      content.push(table);
      csvPreview(table, csv[1]);
    }
    if (r !== null && r !== undefined && job.kind !== "montecarlo") {
      const shown = r && r.history ? { ...r, history: `[${r.history.length} rounds]` } : r;
      content.push(h("details.raw", null, h("summary", null, "Result as JSON"),
        h("pre", { text: JSON.stringify(shown, null, 2) })));
    } else if (job.kind === "montecarlo" && r) {
      content.push(h("details.raw", null, h("summary", null, "Result as JSON"), h("pre", { text: JSON.stringify(r) })));
    }
    parts.result.hidden = content.length === 0;
    setText(parts.result.querySelector("h2"), job.state === "succeeded" ? "Result" : "So far");
    fill(box, content);
  }

  async function csvPreview(box, blob) {
    try {
      const res = await api(`/blobs/${encodeURIComponent(blob)}`, { raw: true, headers: { Range: "bytes=0-65535" } });
      const text = await res.text();
      const lines = text.split(/\r?\n/).filter(Boolean);
      const complete = text.length < 65536 ? lines : lines.slice(0, -1);
      const rows = complete.slice(0, 51).map(splitCsv);
      if (!rows.length) return;
      fill(box, h("table.table.compact", null,
        h("thead", null, h("tr", null, rows[0].map((c) => h("th", { scope: "col", text: c })))),
        h("tbody", null, rows.slice(1).map((r) => h("tr", null, r.map((c) => h("td", { text: c })))))),
      complete.length > 51 ? h("p.muted", null, "First 50 rows; download the file for all of them.") : null);
    } catch (_) {
      fill(box);
    }
  }

  function drawWorkers() {
    const counts = new Map();
    if (chunksComplete && chunks.size) {
      for (const c of chunks.values()) if (c.state === "done" && c.worker) counts.set(c.worker, (counts.get(c.worker) || 0) + 1);
    } else {
      for (const [wid, n] of Object.entries(job.workers || {})) counts.set(wid, n);
    }
    const outvoted = job.outvoted || {};
    for (const wid of Object.keys(outvoted)) if (!counts.has(wid)) counts.set(wid, 0);  // flagged, nothing accepted
    const entries = [...counts.entries()].sort((a, b) => b[1] - a[1]);
    const max = Math.max(1, ...entries.map(([, n]) => n));
    if (!entries.length) {
      fill(parts.perWorker, h("li.muted", null, "No chunk finished yet."));
      return;
    }
    if (parts.perWorker.firstElementChild && !parts.perWorker.firstElementChild.dataset.key) fill(parts.perWorker);
    keyed(parts.perWorker, entries, ([wid]) => wid,
      () => h("li.pw", null, h("span.pw-name"), h("span.pw-bar", null, h("span.pw-fill")), h("span.pw-n.num")),
      (li, [wid, n]) => {
        const lost = store.workers.get(wid)?.state === "lost";
        const flagged = outvoted[wid] ? ` (outvoted ×${outvoted[wid]})` : "";
        setText(li.children[0], `${workerName(wid)}${lost ? " (lost)" : ""}${flagged}`);
        li.classList.toggle("flagged", Boolean(flagged));
        li.children[1].firstElementChild.style.width = `${(100 * n) / max}%`;
        setText(li.children[2], fmtInt(n));
      });
  }

  function drawGantt() {
    if (!parts.gantt) return;
    const lost = new Set([...store.workers.values()].filter((w) => w.state === "lost").map((w) => w.id));
    gantt(parts.gantt, [...chunks.values()], { nameOf: workerName, lostIds: lost });
  }

  function queueGantt() {
    if (ganttQueued) return;
    ganttQueued = true;
    setTimeout(() => {
      ganttQueued = false;
      if (!destroyed) {
        drawGantt();
        drawWorkers();
      }
    }, 250);
  }

  async function loadChunks() {
    const list = await api(`/jobs/${encodeURIComponent(id)}/chunks?limit=${CHUNK_LIMIT}`);
    chunks = new Map(list.map((c) => [`${c.stage}:${c.index}`, c]));
    chunksComplete = list.length < CHUNK_LIMIT;
  }

  // One load at a time; an event that lands while a load is in flight may be newer than what the
  // load brings back (a job that ends within milliseconds of opening its page), so load once more.
  let loading = false;
  let loadAgain = false;

  async function refresh() {
    if (loading) {
      loadAgain = true;
      return;
    }
    loading = true;
    try {
      await load();
    } finally {
      loading = false;
      if (loadAgain && !destroyed) {
        loadAgain = false;
        refresh();
      }
    }
  }

  async function load() {
    try {
      const [full] = await Promise.all([api(`/jobs/${encodeURIComponent(id)}`), loadChunks()]);
      if (destroyed) return;
      const first = job === null;
      const known = store.jobs.get(id);
      // Never step a job back from its end: the event stream already said it ended.
      if (known && TERMINAL.has(known.state) && ACTIVE_STATES.has(full.state)) loadAgain = true;
      job = full;
      if (!loadAgain) store.jobs.set(job.id, { ...known, ...summaryOf(job) });
      if (first) build();
      drawHead();
      drawProgress();
      drawStatic();
      drawWorkers();
      drawGantt();
    } catch (err) {
      if (destroyed) return;
      if (job === null) {
        fill(body, h("div.callout.error", { role: "alert" },
          err.status === 404 ? `There is no job ${id}.` : `Could not load the job: ${err.message}`));
      }
    }
  }

  const stopChunks = onChunk((c) => {
    if (c.job_id !== id || !job) return;
    const key = `${c.stage}:${c.index}`;
    const { type, job_id, ...chunk } = c;
    chunks.set(key, { ...chunks.get(key), ...chunk });
    queueGantt();
  });

  refresh();
  const tick = setInterval(() => {
    if (job && ACTIVE_STATES.has(job.state)) {
      drawProgress();
      drawGantt(); // running bars grow
    }
  }, 1000);

  return {
    update(kinds) {
      if (loading && (kinds.has("jobs") || kinds.has("all"))) loadAgain = true;
      if (!job) return;
      if (kinds.has("all")) {
        refresh(); // (re)connected: reload this job too
        return;
      }
      if (!kinds.has("jobs") && !kinds.has("workers")) return;
      const live = store.jobs.get(id);
      if (live && kinds.has("jobs")) {
        const before = job.state;
        job = { ...job, ...live };
        drawHead();
        drawProgress();
        if (job.kind === "train") drawResult();
        if (before !== job.state && !ACTIVE_STATES.has(job.state)) refresh(); // result, outputs, error
      }
      if (kinds.has("workers")) drawWorkers();
    },
    destroy() {
      destroyed = true;
      clearInterval(tick);
      stopChunks();
      if (parts.stopResize) parts.stopResize();
    },
  };
}

function summaryOf(job) {
  const { id, kind, state, progress, stage, priority, created_at, started_at, finished_at } = job;
  return { id, kind, state, progress, stage, priority, created_at, started_at, finished_at };
}

function splitCsv(line) {
  const out = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') { cur += '"'; i++; }
      else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") { out.push(cur); cur = ""; }
    else cur += ch;
  }
  out.push(cur);
  return out;
}
