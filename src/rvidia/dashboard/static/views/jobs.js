// Jobs: kind, state, progress, duration, and cancel, newest first, live.

import { api } from "../api.js";
import { ACTIVE_STATES, ago, badge, fill, fmtDuration, h, jobDuration, keyed, progressBar, setText, setTitle,
  updateProgress } from "../dom.js";
import { loadMoreJobs, sortedJobs, store } from "../store.js";

export function jobsTable(tbody) {
  return h("div.table-wrap", null, h("table.table.jobs-table", null,
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Job"), h("th", { scope: "col" }, "Kind"), h("th", { scope: "col" }, "State"),
      h("th.col-progress", { scope: "col" }, "Progress"), h("th", { scope: "col" }, "Duration"),
      h("th", { scope: "col" }, "Submitted"), h("th", { scope: "col" }, h("span.sr-only", null, "Actions")))),
    tbody));
}

export async function cancelJob(id, button) {
  if (button) button.disabled = true;
  try {
    const job = await api(`/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    store.jobs.set(job.id, { ...store.jobs.get(job.id), ...job });
  } catch (err) {
    if (button) {
      button.disabled = false;
      button.title = err.message;
    }
    if (err.status !== 409) alertError(err.message);
  }
}

function alertError(message) {
  const box = document.getElementById("toast") || document.body.appendChild(h("div#toast.toast", { role: "alert" }));
  box.textContent = message;
  box.hidden = false;
  clearTimeout(alertError.timer);
  alertError.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

export function jobRow(job) {
  const href = `#/jobs/${encodeURIComponent(job.id)}`;
  const cancel = h("button.btn.btn-small.btn-danger.cancel", { type: "button", "aria-label": `Cancel job ${job.id}` }, "Cancel");
  cancel.addEventListener("click", (e) => {
    e.preventDefault();
    cancelJob(job.id, cancel);
  });
  return h("tr.job-row", { dataset: { id: job.id } },
    h("td.cell-id", { "data-label": "Job" }, h("a.mono", { href, text: job.id })),
    h("td.cell-kind", { "data-label": "Kind", text: job.kind }),
    h("td.cell-state", { "data-label": "State" }),
    h("td.cell-progress", { "data-label": "Progress" }, progressBar(job.progress, job.state)),
    h("td.cell-duration", { "data-label": "Duration" }),
    h("td.cell-created", { "data-label": "Submitted" }),
    h("td.cell-actions", null, cancel));
}

export function jobRowUpdate(tr, job) {
  const [, , stateCell, progressCell, durationCell, createdCell, actions] = tr.children;
  if (stateCell.dataset.state !== job.state) {
    stateCell.dataset.state = job.state;
    fill(stateCell, badge(job.state));
    tr.dataset.state = job.state;
  }
  updateProgress(progressCell.firstElementChild, job.progress, job.state);
  setText(durationCell, job.started_at ? fmtDuration(jobDuration(job)) : job.state === "queued" ? "waiting" : "–");
  setText(createdCell, ago(job.created_at));
  createdCell.title = job.created_at || "";
  actions.firstElementChild.hidden = !ACTIVE_STATES.has(job.state);
}

export function jobsView(main) {
  setTitle("Jobs");
  const tbody = h("tbody");
  const filter = h("select#state-filter", { "aria-label": "Show jobs in state" },
    h("option", { value: "" }, "All states"),
    ["queued", "running", "succeeded", "failed", "cancelled"].map((st) => h("option", { value: st }, st)));
  const more = h("button.btn", { type: "button" }, "Load older jobs");
  const empty = h("p.muted.empty", { hidden: true });
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      await loadMoreJobs();
    } finally {
      more.disabled = false;
    }
  });
  filter.addEventListener("change", draw);
  fill(main,
    h("div.page-head", null, h("h1", null, "Jobs"),
      h("div.page-actions", null, filter, h("a.btn.btn-primary", { href: "#/submit" }, "Submit a job"))),
    h("section.card.flush", null, jobsTable(tbody), empty),
    h("div.more", null, more));

  function draw() {
    const wanted = filter.value;
    const jobs = sortedJobs().filter((j) => !wanted || j.state === wanted);
    keyed(tbody, jobs, (j) => j.id, jobRow, jobRowUpdate);
    empty.hidden = jobs.length > 0;
    empty.replaceChildren(...(store.jobs.size
      ? [`No ${wanted} jobs among those loaded.`]
      : ["No jobs yet. ", h("a", { href: "#/submit" }, "Submit one"), "."]));
    more.hidden = !store.moreJobs;
  }
  draw();
  const tick = setInterval(draw, 1000); // durations and "ago" tick locally
  return {
    update(kinds) {
      if (kinds.has("jobs") || kinds.has("all")) draw();
    },
    destroy() {
      clearInterval(tick);
    },
  };
}
