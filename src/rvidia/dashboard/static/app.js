// The dashboard: sign-in, the page frame and navigation, and the live connection.

import { api, setUnauthorizedHandler } from "./api.js";
import { fill, h, setText } from "./dom.js";
import { startLive, stopLive } from "./live.js";
import { reset, store, subscribe } from "./store.js";
import { jobView } from "./views/job.js";
import { jobsView } from "./views/jobs.js";
import { overviewView } from "./views/overview.js";
import { signInView } from "./views/signin.js";
import { submitView } from "./views/submit.js";
import { workersView } from "./views/workers.js";

const root = document.getElementById("app");
const ROUTES = [
  { path: "overview", label: "Overview", view: overviewView },
  { path: "workers", label: "Workers", view: workersView },
  { path: "jobs", label: "Jobs", view: jobsView },
  { path: "submit", label: "Submit", view: submitView },
];

let current = null; // the mounted view: {destroy(), update(kinds)}
let shell = null;

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts[1]) return { name: "jobs", view: jobView, args: [parts[1]] };
  const found = ROUTES.find((r) => r.path === parts[0]) || ROUTES[0];
  return { name: found.path, view: found.view, args: parts.slice(1) };
}

function showView() {
  if (!shell) return;
  if (current) current.destroy();
  const r = route();
  for (const link of shell.nav.querySelectorAll("a")) {
    if (link.dataset.route === r.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = fill(shell.main);
  current = r.view(main, ...r.args);
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function buildShell() {
  const status = h("span.conn", { role: "status", "aria-live": "polite" }, h("span.conn-dot"), h("span.conn-text"));
  const who = h("span.who");
  const nav = h("nav.nav", { "aria-label": "Sections" },
    ROUTES.map((r) => h("a", { href: `#/${r.path}`, dataset: { route: r.path }, text: r.label })));
  const signOutBtn = h("button.btn.btn-quiet#sign-out", { type: "button", onclick: signOut }, "Sign out");
  const header = h("header.topbar", null,
    h("a.brand", { href: "#/overview", "aria-label": "RVIDIA overview" },
      h("span.brand-mark", { "aria-hidden": "true" }), "RVIDIA"),
    nav,
    h("div.topbar-right", null, status, who, signOutBtn));
  const main = h("main.main#main", { tabindex: "-1" });
  fill(root, header, main);
  shell = { nav, main, status, who };
  updateShell();
}

function updateShell() {
  if (!shell) return;
  const labels = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" };
  shell.status.dataset.state = store.connection;
  setText(shell.status.lastElementChild, labels[store.connection] || store.connection);
  setText(shell.who, store.me ? `${store.me.name}` : "");
  shell.who.title = store.me ? `signed in as ${store.me.name} (${store.me.role})` : "";
}

subscribe((kinds) => {
  if (kinds.has("connection") || kinds.has("all")) updateShell();
  if (current && current.update) current.update(kinds);
});

async function enter(me) {
  store.me = me;
  buildShell();
  showView();
  startLive(showSignIn);
}

function showSignIn(message) {
  stopLive();
  if (current) current.destroy();
  current = null;
  shell = null;
  reset();
  document.title = "Sign in · RVIDIA";
  signInView(root, message, enter);
}

async function signOut() {
  stopLive();
  try {
    await api("/session", { method: "DELETE" });
  } catch (_) {
    // signed out here either way
  }
  showSignIn("You are signed out.");
}

setUnauthorizedHandler(() => {
  if (shell) showSignIn("Your session has ended. Sign in again.");
});

window.addEventListener("hashchange", showView);

async function boot() {
  try {
    const me = await api("/session");
    if (me.signed_in) {
      enter(me);
      return;
    }
  } catch (_) {
    showSignIn("The master cannot be reached.");
    return;
  }
  showSignIn();
}

boot();
