// Workers: who helps, how busy they are, how fast, and when they were last heard from.

import { ago, fill, fmtBytes, fmtInt, fmtPercent, h, keyed, setText, setTitle } from "../dom.js";
import { hostCores, store } from "../store.js";

const ORDER = { busy: 0, idle: 1, paused: 2, lost: 3 };

function meter(label) {
  return h("div.meter", { role: "meter", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" },
    h("div.meter-fill"), h("span.meter-text"));
}

function setMeter(el, percent) {
  const p = Math.max(0, Math.min(100, percent || 0));
  el.firstElementChild.style.width = `${p}%`;
  el.firstElementChild.classList.toggle("hot", p >= 85);
  el.setAttribute("aria-valuenow", String(Math.round(p)));
  setText(el.lastElementChild, fmtPercent(percent));
}

function row(w) {
  return h("tr.worker-row", { dataset: { id: w.id } },
    h("td.cell-name", { "data-label": "Name" }, h("div.stack", null, h("strong.wname"), h("div.sub.mono"))),
    h("td", { "data-label": "Host" }),
    h("td", { "data-label": "State" }),
    h("td.num", { "data-label": "Slots" }),
    h("td.num", { "data-label": "Running" }),
    h("td", { "data-label": "CPU" }, meter("CPU use")),
    h("td", { "data-label": "Memory" }, h("div.stack", null, meter("Memory use"), h("div.sub"))),
    h("td.num", { "data-label": "Speed" }),
    h("td.num", { "data-label": "Chunks done" }),
    h("td", { "data-label": "Last seen" }));
}

function update(tr, w) {
  const c = tr.children;
  setText(c[0].firstElementChild.firstElementChild, w.name);
  setText(c[0].firstElementChild.lastElementChild, w.id);
  setText(c[1], w.host);
  c[1].title = [w.os, w.python && `Python ${w.python}`].filter(Boolean).join(" · ");
  const shown = `${w.state}/${w.drained}/${w.outvoted || 0}`;
  if (c[2].dataset.shown !== shown) {
    c[2].dataset.shown = shown;
    c[2].dataset.state = w.state;
    fill(c[2], h(`span.badge.state-${w.state}`, { text: w.state }), w.drained ? h("span.sub", null, " drained") : null,
      w.outvoted ? h("span.badge.state-failed.flagged", { text: `outvoted ×${w.outvoted}`,
        title: "results of replicated chunks where this worker disagreed with the majority" }) : null);
    tr.dataset.state = w.state;
  }
  c[2].title = w.lost_reason || "";
  setText(c[3], fmtInt(w.slots));
  setText(c[4], fmtInt(w.running));
  setMeter(c[5].firstElementChild, w.state === "lost" ? 0 : w.cpu_percent);
  setMeter(c[6].firstElementChild.firstElementChild, w.state === "lost" ? 0 : w.memory_percent);
  const gpus = w.gpus || [];
  const gpuText = gpus.length ? ` · ${gpus.length} GPU${gpus.length > 1 ? "s" : ""} (${gpus[0].name})` : "";
  setText(c[6].firstElementChild.lastElementChild, `of ${fmtBytes(w.memory_bytes)} · ${fmtInt(w.cores)} cores${gpuText}`);
  c[6].title = gpus.map((g) => `${g.name}, ${fmtBytes(g.memory_bytes)}, driver ${g.driver}`).join("\n");
  setText(c[7], w.speed ? Number(w.speed).toPrecision(3) : "–");
  c[7].title = "relative speed the worker measured at start";
  setText(c[8], fmtInt(w.chunks_done));
  setText(c[9], ago(w.last_seen));
  c[9].title = w.last_seen || "";
}

export function workersView(main) {
  setTitle("Workers");
  const tbody = h("tbody");
  const summary = h("p.muted#workers-summary");
  const empty = h("p.muted.empty", { hidden: true }, "No worker has joined yet. Start one with ",
    h("code", null, "rvidia worker --master URL --token TOKEN"), ".");
  fill(main,
    h("div.page-head", null, h("h1", null, "Workers"), summary),
    h("section.card.flush", null,
      h("div.table-wrap", null, h("table.table.workers-table", null,
        h("thead", null, h("tr", null, ["Name", "Host", "State", "Slots", "Running", "CPU", "Memory", "Speed",
          "Chunks done", "Last seen"].map((label) => h("th", { scope: "col", text: label })))),
        tbody)),
      empty));

  function draw() {
    const workers = [...store.workers.values()].sort((a, b) =>
      (ORDER[a.state] ?? 9) - (ORDER[b.state] ?? 9) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    keyed(tbody, workers, (w) => w.id, row, update);
    empty.hidden = workers.length > 0;
    const online = workers.filter((w) => w.state !== "lost");
    setText(summary, `${online.length} online · ${online.reduce((n, w) => n + w.slots, 0)} slots · ` +
      `${hostCores(online)} cores`);
  }
  draw();
  const tick = setInterval(draw, 1000); // "last seen" ticks locally
  return {
    update(kinds) {
      if (kinds.has("workers") || kinds.has("all")) draw();
    },
    destroy() {
      clearInterval(tick);
    },
  };
}
