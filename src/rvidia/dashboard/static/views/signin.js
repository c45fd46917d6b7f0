// Sign-in with the cluster token: nothing of the cluster is fetched before it succeeds.

import { api } from "../api.js";
import { fill, h } from "../dom.js";

export function signInView(root, message, onSignedIn) {
  const error = h("p.form-error#signin-error", { role: "alert" });
  const input = h("input#token", { type: "password", name: "token", autocomplete: "current-password",
    required: true, spellcheck: "false", "aria-describedby": "token-hint signin-error" });
  const button = h("button.btn.btn-primary", { type: "submit" }, "Sign in");
  const form = h("form.signin-form", { novalidate: true },
    h("label", { for: "token" }, "Cluster token"),
    input,
    h("p.hint#token-hint", null, "The token ", h("code", null, "rvidia up"),
      " printed (also in ", h("code", null, "~/.rvidia/token"), ")."),
    error,
    button);
  if (message) {
    error.textContent = message;
    error.classList.add("info");
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    error.classList.remove("info");
    if (!token) {
      error.textContent = "Enter the cluster token.";
      input.focus();
      return;
    }
    button.disabled = true;
    error.textContent = "";
    try {
      const me = await api("/session", { method: "POST", body: { token } });
      input.value = "";
      onSignedIn({ signed_in: true, ...me });
    } catch (err) {
      error.textContent = err.status === 401 ? "Wrong token: check it and try again." : err.message;
      input.select();
      input.setAttribute("aria-invalid", "true");
    } finally {
      button.disabled = false;
    }
  });
  fill(root, h("main.signin", null,
    h("div.signin-card", null,
      h("div.signin-brand", null, h("span.brand-mark", { "aria-hidden": "true" }), "RVIDIA"),
      h("h1", null, "Sign in"),
      h("p.muted", null, "Watch the cluster, submit jobs and inspect their results."),
      form)));
  input.focus();
}
