// Charts drawn as SVG by hand: a per-second area chart, line charts per round, a Gantt timeline.

import { fill, fmtDuration, h, parseTime, s } from "./dom.js";

// Round `max` up to a "nice" axis top and pick tick steps.
function niceTicks(max, count = 4) {
  if (!(max > 0)) return { top: 1, step: 1 };
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((v) => v >= raw) || 10 * mag;
  return { top: Math.ceil(max / step) * step, step };
}

function fmtTick(v) {
  if (Math.abs(v) >= 1000) return `${+(v / 1000).toFixed(1)}k`;
  return String(+v.toFixed(3));
}

function width(container, fallback = 600) {
  return Math.max(240, Math.floor(container.clientWidth || fallback));
}

// Chunks finished per second: `counts` oldest first, one per second, the last one is now.
export function rateChart(container, counts) {
  const W = width(container);
  const H = 180;
  const pad = { l: 40, r: 10, t: 12, b: 24 };
  const iw = W - pad.l - pad.r;
  const ih = H - pad.t - pad.b;
  const n = counts.length;
  const { top, step } = niceTicks(Math.max(1, ...counts));
  const x = (i) => pad.l + (n <= 1 ? 0 : (i / (n - 1)) * iw);
  const y = (v) => pad.t + ih - (v / top) * ih;
  const svg = s("svg.chart", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "Chunks finished per second over the last minutes" });
  for (let v = 0; v <= top + 1e-9; v += step) {
    svg.append(s("line.grid", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }),
      s("text.axis", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" }, fmtTick(v)));
  }
  const minutes = Math.floor(n / 60);
  for (let m = 0; m <= minutes; m++) {
    const i = n - 1 - m * 60;
    if (i < 0) break;
    svg.append(s("text.axis", { x: x(i), y: H - 6, "text-anchor": m === 0 ? "end" : "middle" },
      m === 0 ? "now" : `−${m} min`));
  }
  if (n > 1) {
    let line = "";
    counts.forEach((v, i) => { line += `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`; });
    const area = `${line}L${x(n - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
    svg.append(s("path.area", { d: area }), s("path.line", { d: line }));
  }
  fill(container, svg);
}

// Line chart of several series over rounds 1..n. series: [{label, values, cls}]; `percent` formats
// the axis as percentages of 1.
export function roundsChart(container, series, { title, percent = false } = {}) {
  const W = width(container, 400);
  const H = 200;
  const pad = { l: 46, r: 12, t: 12, b: 28 };
  const iw = W - pad.l - pad.r;
  const ih = H - pad.t - pad.b;
  const n = Math.max(0, ...series.map((d) => d.values.length));
  const all = series.flatMap((d) => d.values).filter((v) => Number.isFinite(v));
  const maxV = percent ? 1 : Math.max(...all, 0);
  const { top, step } = percent ? { top: 1, step: 0.25 } : niceTicks(maxV || 1);
  const x = (i) => pad.l + (n <= 1 ? iw / 2 : (i / (n - 1)) * iw);
  const y = (v) => pad.t + ih - (Math.min(v, top) / top) * ih;
  const svg = s("svg.chart", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (let v = 0; v <= top + 1e-9; v += step) {
    svg.append(s("line.grid", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }),
      s("text.axis", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" },
        percent ? `${Math.round(v * 100)}%` : fmtTick(v)));
  }
  const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(iw / 40))));
  for (let i = 0; i < n; i += every) {
    svg.append(s("text.axis", { x: x(i), y: H - 8, "text-anchor": "middle" }, String(i + 1)));
  }
  series.forEach((d, k) => {
    const pts = d.values.map((v, i) => [x(i), y(v)]).filter(([, py]) => Number.isFinite(py));
    if (!pts.length) return;
    const path = pts.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
    svg.append(s(`path.series.series-${k}`, { d: path }));
    if (pts.length <= 60) {
      for (const [px, py] of pts) svg.append(s(`circle.dot.series-${k}`, { cx: px, cy: py, r: 2.5 }));
    }
  });
  const legend = h("div.legend", null, series.map((d, k) =>
    h("span.legend-item", null, h(`span.swatch.series-${k}`), d.label)));
  fill(container, h("div.chart-title", { text: title }), svg, legend);
}

// Gantt timeline: one row per worker (with a lane per overlapping chunk), one bar per chunk.
export function gantt(container, chunks, { nameOf, lostIds = new Set(), now = Date.now() } = {}) {
  const placed = chunks.filter((c) => c.started_at && c.worker);
  if (!placed.length) {
    fill(container, h("p.muted", { text: "No chunk has started yet." }));
    return;
  }
  const times = placed.map((c) => ({
    c,
    t0: parseTime(c.started_at),
    t1: c.finished_at ? parseTime(c.finished_at) : c.state === "running" ? now : parseTime(c.started_at),
  }));
  const t0 = Math.min(...times.map((d) => d.t0));
  const t1 = Math.max(t0 + 1, ...times.map((d) => d.t1));
  const byWorker = new Map();
  for (const d of times) {
    if (!byWorker.has(d.c.worker)) byWorker.set(d.c.worker, []);
    byWorker.get(d.c.worker).push(d);
  }
  const rows = [...byWorker.entries()].map(([wid, items]) => {
    items.sort((a, b) => a.t0 - b.t0);
    const laneEnds = [];
    for (const d of items) {
      let lane = laneEnds.findIndex((end) => end <= d.t0);
      if (lane < 0) { lane = laneEnds.length; laneEnds.push(0); }
      laneEnds[lane] = d.t1;
      d.lane = lane;
    }
    return { wid, items, lanes: Math.max(1, laneEnds.length) };
  }).sort((a, b) => nameOf(a.wid).localeCompare(nameOf(b.wid)));

  const W = width(container);
  const labelW = W < 500 ? 84 : 140;
  const laneH = 12;
  const gap = 8;
  const axisH = 22;
  const pad = { r: 12 };
  const iw = W - labelW - pad.r;
  const H = axisH + rows.reduce((sum, r) => sum + r.lanes * laneH + gap, 0) + 4;
  const x = (t) => labelW + ((t - t0) / (t1 - t0)) * iw;
  const svg = s("svg.chart.gantt", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "Timeline of chunks per worker" });
  const span = (t1 - t0) / 1000;
  const { step } = niceTicks(span, Math.max(2, Math.floor(iw / 90)));
  for (let v = 0; v <= span + 1e-9; v += step) {
    const px = x(t0 + v * 1000);
    svg.append(s("line.grid", { x1: px, x2: px, y1: axisH - 4, y2: H }),
      s("text.axis", { x: px, y: 12, "text-anchor": v === 0 ? "start" : px > W - 40 ? "end" : "middle" },
        fmtDuration(v)));
  }
  let top = axisH;
  for (const row of rows) {
    const rh = row.lanes * laneH;
    const lost = lostIds.has(row.wid);
    const label = `${nameOf(row.wid)}${lost ? " (lost)" : ""}`;
    svg.append(s(`text.gantt-label${lost ? ".lost" : ""}`, { x: 0, y: top + rh / 2 + 4 }, clip(label, labelW)));
    svg.append(s("rect.gantt-row", { x: labelW, y: top - 2, width: iw, height: rh + 4 }));
    for (const d of row.items) {
      const bx = x(d.t0);
      const bw = Math.max(1.5, x(d.t1) - bx);
      const state = d.c.state !== "done" && d.c.error ? "failed" : d.c.state; // its last attempt failed
      const cls = `bar state-${state}${d.c.stage % 2 ? " odd-stage" : ""}`;
      const secs = (d.t1 - d.t0) / 1000;
      const lastLine = d.c.error ? ` · ${d.c.error.trim().split("\n").at(-1)}` : "";
      const tip = `chunk ${d.c.index}${d.c.stage ? ` (stage ${d.c.stage})` : ""} · ${state} · ` +
        `${fmtDuration(secs)} · attempt ${d.c.attempts}${lastLine}`;
      svg.append(s("rect", { class: cls, x: bx, y: top + d.lane * laneH + 1, width: bw, height: laneH - 2, rx: 2 },
        s("title", null, tip)));
    }
    top += rh + gap;
  }
  fill(container, svg);
}

function clip(text, px) {
  const max = Math.floor(px / 7);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
