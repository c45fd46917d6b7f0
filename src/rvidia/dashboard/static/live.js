// The /ws/events connection: reconnects by itself (backoff with jitter) and reloads the state over
// REST every time it (re)connects, so nothing missed while it was away stays wrong.

import { api } from "./api.js";
import { applyEvent, changed, reload, store } from "./store.js";

let socket = null;
let stopped = true;
let attempt = 0;
let timer = null;
let onSignedOut = () => {};

export function startLive(signedOut) {
  onSignedOut = signedOut;
  stopped = false;
  attempt = 0;
  connect();
}

export function stopLive() {
  stopped = true;
  clearTimeout(timer);
  if (socket) {
    const s = socket;
    socket = null;
    s.close(1000, "signed out");
  }
  setConnection("offline");
}

function setConnection(state) {
  if (store.connection !== state) {
    store.connection = state;
    changed("connection");
  }
}

function connect() {
  if (stopped) return;
  setConnection(attempt ? "reconnecting" : "connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/events`);
  socket = ws;
  ws.addEventListener("open", async () => {
    if (socket !== ws) return;
    try {
      await reload();
      attempt = 0;
      setConnection("live");
    } catch (err) {
      ws.close(4000, "reload failed");
    }
  });
  ws.addEventListener("message", (msg) => {
    if (socket !== ws) return;
    try {
      applyEvent(JSON.parse(msg.data));
    } catch (err) {
      console.warn("rvidia: bad event", err);
    }
  });
  ws.addEventListener("close", () => {
    if (socket !== ws || stopped) return;
    socket = null;
    scheduleReconnect();
  });
}

async function scheduleReconnect() {
  attempt += 1;
  setConnection("reconnecting");
  const delay = Math.min(8000, 400 * 2 ** Math.min(attempt - 1, 5)) * (0.75 + Math.random() / 2);
  timer = setTimeout(async () => {
    if (stopped) return;
    // Ask first whether the session still holds (a restarted master may have forgotten it): a
    // refused WebSocket upgrade cannot say why.
    try {
      const me = await api("/session");
      if (!me.signed_in) {
        stopLive();
        onSignedOut("Your session has ended. Sign in again.");
        return;
      }
    } catch (_) {
      // the master is still away: try the socket anyway, it fails fast
    }
    connect();
  }, delay);
}
