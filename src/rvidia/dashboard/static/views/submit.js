// Submit: a form generated from the chosen kind's JSON Schema, file inputs uploaded as blobs, and
// the master's 422 reason shown next to the field it names.

import { ApiError, api, uploadBlob } from "../api.js";
import { fill, fmtBytes, h, setTitle } from "../dom.js";

let kindsCache = null;

const ENVELOPE = [
  { name: "priority", schema: { type: "integer", default: 0, description: "Higher runs first (−1000 to 1000)" } },
  { name: "max_attempts", schema: { type: "integer", default: 3, description: "Attempts per chunk before the job fails" } },
  { name: "timeout", schema: { anyOf: [{ type: "number" }, { type: "null" }], default: null, description: "Seconds per chunk attempt (empty: none)" } },
];

export function submitView(main, preselect) {
  setTitle("Submit a job");
  const kindSelect = h("select#kind", { name: "kind", "aria-describedby": "kind-description" });
  const description = h("p.hint#kind-description");
  const fields = h("div.fields");
  const inputsBox = h("div.fields");
  const advanced = h("details.advanced", null, h("summary", null, "Advanced: priority, attempts, timeout"), h("div.fields"));
  const formError = h("div.callout.error#form-error", { role: "alert", hidden: true });
  const submitBtn = h("button.btn.btn-primary#submit-job", { type: "submit" }, "Submit job");
  const statusLine = h("span.muted.submit-status", { "aria-live": "polite" });
  const form = h("form.submit-form", { novalidate: true },
    h("div.field", null, h("label", { for: "kind" }, "Kind"), kindSelect, description),
    h("fieldset.group#inputs-group", { hidden: true }, h("legend", null, "Input files"), inputsBox),
    h("fieldset.group", null, h("legend", null, "Parameters"), fields),
    advanced,
    formError,
    h("div.form-actions", null, submitBtn, statusLine));
  fill(main, h("div.page-head", null, h("h1", null, "Submit a job")), h("section.card.submit-card", null, form));

  let kinds = [];
  let current = null;
  let destroyed = false;

  async function load() {
    try {
      if (!kindsCache) kindsCache = await api("/kinds");
      kinds = kindsCache.filter((k) => !k.hidden).sort((a, b) => a.name.localeCompare(b.name));
    } catch (err) {
      showFormError(`Could not load the job kinds: ${err.message}`);
      return;
    }
    if (destroyed) return;
    fill(kindSelect, kinds.map((k) => h("option", { value: k.name, text: k.name })));
    const start = kinds.find((k) => k.name === preselect) || kinds.find((k) => k.name === "montecarlo") || kinds[0];
    if (start) kindSelect.value = start.name;
    choose();
  }

  function choose() {
    current = kinds.find((k) => k.name === kindSelect.value);
    if (!current) return;
    description.textContent = current.description || "";
    const schema = current.params || {};
    const required = new Set(schema.required || []);
    fill(fields, Object.entries(schema.properties || {}).map(([name, prop]) =>
      fieldFor(name, prop, required.has(name), "p")));
    if (!Object.keys(schema.properties || {}).length) fill(fields, h("p.muted", null, "This kind takes no parameters."));
    const files = [...(current.inputs || []).map((n) => [n, true]), ...(current.optional_inputs || []).map((n) => [n, false])];
    form.querySelector("#inputs-group").hidden = files.length === 0;
    fill(inputsBox, files.map(([name, req]) => fileField(name, req)));
    fill(advanced.querySelector(".fields"), ENVELOPE.map((f) => fieldFor(f.name, f.schema, false, "job")));
    clearErrors();
  }

  kindSelect.addEventListener("change", () => {
    history.replaceState(null, "", `#/submit/${encodeURIComponent(kindSelect.value)}`);
    choose();
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!current) return;
    clearErrors();
    const params = {};
    const envelope = {};
    let bad = false;
    for (const el of form.querySelectorAll("[data-param]")) {
      const { value, error } = readField(el);
      if (error) {
        showFieldError(el.dataset.param, error, el.dataset.scope);
        bad = true;
      } else if (value !== undefined) {
        (el.dataset.scope === "job" ? envelope : params)[el.dataset.param] = value;
      }
    }
    if (bad) {
      focusFirstError();
      return;
    }
    submitBtn.disabled = true;
    try {
      const inputs = {};
      for (const el of inputsBox.querySelectorAll("input[type=file]")) {
        const file = el.files[0];
        if (!file) continue;
        const note = el.parentElement.querySelector(".upload-note");
        statusLine.textContent = `Uploading ${file.name}…`;
        const blob = await uploadBlob(file, (f) => { note.textContent = `uploading: ${Math.round(100 * f)}% of ${fmtBytes(file.size)}`; });
        note.textContent = `uploaded (${fmtBytes(blob.size)})`;
        inputs[el.dataset.input] = blob.id;
      }
      statusLine.textContent = "Submitting…";
      const job = await api("/jobs", {
        method: "POST",
        body: { kind: current.name, params, inputs, ...envelope },
        headers: { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) },
      });
      statusLine.textContent = "";
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      statusLine.textContent = "";
      if (err instanceof ApiError && err.status === 422) placeReason(err.message);
      else showFormError(err.message);
    } finally {
      submitBtn.disabled = false;
    }
  });

  // Put the master's reason next to the field it names, else above the button.
  function placeReason(reason) {
    const names = [...form.querySelectorAll("[data-param]")].map((el) => el.dataset.param);
    const inputs = [...inputsBox.querySelectorAll("[data-input]")].map((el) => el.dataset.input);
    const target = fieldOfReason(reason, names, inputs);
    if (target) {
      const el = form.querySelector(`[data-param="${target}"], [data-input="${target}"]`);
      if (el && el.dataset.scope === "job") advanced.open = true;
      showFieldError(target, reason);
    } else showFormError(reason);
    focusFirstError();
  }

  function showFieldError(name, message) {
    const el = form.querySelector(`[data-param="${name}"], [data-input="${name}"]`);
    if (!el) {
      showFormError(message);
      return;
    }
    el.setAttribute("aria-invalid", "true");
    const err = el.closest(".field").querySelector(".field-error");
    err.textContent = message;
    err.hidden = false;
  }

  function showFormError(message) {
    formError.textContent = message;
    formError.hidden = false;
  }

  function clearErrors() {
    formError.hidden = true;
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of form.querySelectorAll(".field-error")) {
      el.textContent = "";
      el.hidden = true;
    }
  }

  function focusFirstError() {
    const el = form.querySelector("[aria-invalid=true]");
    if (el) el.focus();
  }

  load();
  return { destroy() { destroyed = true; } };
}

// Which field a 422 reason is about: "... at `$.samples`", "missing required field `samples`",
// "needs input 'table'", or else the field named earliest in the text.
export function fieldOfReason(reason, names, inputs = []) {
  const at = reason.match(/at `\$\.([A-Za-z_]\w*)/);
  if (at && names.includes(at[1])) return at[1];
  const missing = reason.match(/required field `(\w+)`/);
  if (missing && names.includes(missing[1])) return missing[1];
  const input = reason.match(/input (?:named )?'(\w+)'/);
  if (input && inputs.includes(input[1])) return input[1];
  let best = null;
  let bestAt = Infinity;
  for (const name of [...names, ...inputs]) {
    const m = new RegExp(`(^|[^\\w])${name.replace(/[^\w]/g, "")}([^\\w]|$)`).exec(reason);
    if (m && m.index < bestAt) {
      best = name;
      bestAt = m.index;
    }
  }
  return best;
}

function typeOf(prop) {
  if (prop.enum) return "enum";
  if (prop.anyOf) {
    const inner = prop.anyOf.find((p) => p.type !== "null");
    return inner ? `${typeOf(inner)}?` : "json";
  }
  if (prop.type === "array" && prop.items && prop.items.type === "string" && !prop.items.enum) return "strings";
  if (["integer", "number", "string", "boolean"].includes(prop.type)) return prop.type;
  return "json";
}

function inner(prop) {
  return prop.anyOf ? prop.anyOf.find((p) => p.type !== "null") : prop;
}

function describeLimits(prop) {
  const p = inner(prop) || {};
  const bits = [];
  if (p.minimum !== undefined && p.maximum !== undefined) bits.push(`${fmtNum(p.minimum)} to ${fmtNum(p.maximum)}`);
  else if (p.minimum !== undefined) bits.push(`at least ${fmtNum(p.minimum)}`);
  else if (p.exclusiveMinimum !== undefined) bits.push(`more than ${fmtNum(p.exclusiveMinimum)}`);
  else if (p.maximum !== undefined) bits.push(`at most ${fmtNum(p.maximum)}`);
  return bits.join(", ");
}

function fmtNum(n) {
  return Math.abs(n) >= 1e6 && Number.isInteger(Math.log10(Math.abs(n))) ? `10^${Math.log10(Math.abs(n))}` : n.toLocaleString("en-US");
}

function fieldFor(name, prop, required, scope) {
  const id = `${scope}-${name}`;
  const type = typeOf(prop);
  const label = h("label", { for: id }, name.replace(/_/g, " "), required ? h("span.req", { "aria-hidden": "true" }, " *") : null);
  const hintText = [prop.description, describeLimits(prop)].filter(Boolean).join(" · ");
  const hint = hintText ? h("p.hint", { id: `${id}-hint`, text: hintText }) : null;
  const error = h("p.field-error", { id: `${id}-error`, hidden: true, "aria-live": "polite" });
  const common = { id, name, dataset: { param: name, scope, kind: type }, "aria-describedby": `${hint ? `${id}-hint ` : ""}${id}-error`,
    required: required || null };
  const def = prop.default;
  let control;
  if (type === "enum" || type === "enum?") {
    const values = inner(prop).enum;
    control = h("select", common,
      type === "enum?" || (!required && def === undefined) ? h("option", { value: "" }, "(default)") : null,
      values.map((v) => h("option", { value: JSON.stringify(v), text: String(v) })));
    if (def !== undefined && def !== null) control.value = JSON.stringify(def);
  } else if (type === "boolean") {
    control = h("input", { ...common, type: "checkbox", checked: def === true });
    return h("div.field.field-check", null, h("div.check-row", null, control, label), hint, error);
  } else if (type === "json") {
    control = h("textarea", { ...common, rows: 3, spellcheck: "false",
      placeholder: exampleFor(name, prop) });
    if (def !== undefined && def !== null) control.value = JSON.stringify(def);
  } else {
    const numeric = type.startsWith("integer") || type.startsWith("number");
    control = h("input", { ...common, type: "text", autocomplete: "off", spellcheck: "false",
      inputmode: numeric ? (type.startsWith("integer") ? "numeric" : "decimal") : null,
      placeholder: type === "strings" ? "comma-separated, e.g. city, year" : def === null ? "(none)" : null });
    if (def !== undefined && def !== null) control.value = Array.isArray(def) ? def.join(", ") : String(def);
  }
  return h("div.field", null, label, control, hint, error);
}

function exampleFor(name, prop) {
  if (name === "aggregates") return '{"price": ["sum", "mean"]}';
  return prop.type === "object" ? "{}" : prop.type === "array" ? "[]" : "JSON";
}

// The JSON value of one control: undefined to leave it out (the kind's default applies).
function readField(el) {
  const type = el.dataset.kind;
  if (type === "boolean") return { value: el.checked };
  const raw = el.value.trim();
  if (raw === "") return { value: undefined };
  if (type === "enum" || type === "enum?") return { value: JSON.parse(raw) };
  if (type.startsWith("integer") || type.startsWith("number")) {
    const compact = raw.replace(/[_\s,]/g, "");
    if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(compact)) return { value: Number(compact) };
    return { value: raw }; // the master explains what is wrong with it
  }
  if (type === "strings") return { value: raw.split(",").map((x) => x.trim()).filter(Boolean) };
  if (type === "json") {
    try {
      return { value: JSON.parse(raw) };
    } catch (_) {
      return { error: "This is not valid JSON." };
    }
  }
  return { value: raw };
}

function fileField(name, required) {
  const id = `input-${name}`;
  const error = h("p.field-error", { id: `${id}-error`, hidden: true, "aria-live": "polite" });
  return h("div.field", null,
    h("label", { for: id }, name, required ? h("span.req", { "aria-hidden": "true" }, " *") : h("span.muted", null, " (optional)")),
    h("input", { id, type: "file", name, dataset: { input: name }, required: required || null, "aria-describedby": `${id}-error` }),
    h("p.hint.upload-note"),
    error);
}
