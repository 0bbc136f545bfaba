// The page of `python -m qrnn_lm serve`: plain DOM code over the JSON API (docs/SERVE.md).
"use strict";
const $ = (id) => document.getElementById(id);
const MAX_BITS = 16;     // the colour scale of token costs: 0 .. 16+ bits
const MAX_DIFF = 8;      // the colour scale of differences: -8 .. +8 bits
let controller = null;   // aborts the running generation
let pinned = null;       // the token whose details stay shown after a tap

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Error("The server cannot be reached; is `python -m qrnn_lm serve` still running?");
  }
  if (!response.ok) {
    let message = null;
    try { message = (await response.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(message || `The server answered ${response.status}.`);
  }
  return response;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// a token as shown: blank ones (a space) made visible
function shown(token) {
  if (token === "</s>") return "↵ (end of line)";
  return token.trim() === "" ? "␣" : token;
}

function fmt(x, digits) {
  if (x === null || x === undefined) return "";
  if (!isFinite(x)) return String(x);
  if (x !== 0 && Math.abs(x) < 1e-3) return x.toExponential(2);
  return x.toFixed(digits === undefined ? 4 : digits);
}

// numbers as typed; what is not a number goes as typed so that the server names it
function numberOf(id, integer) {
  const raw = $(id).value.trim();
  if (raw === "") return null;
  const x = Number(raw);
  if (Number.isNaN(x) || (integer && !Number.isInteger(x))) return raw;
  return x;
}

async function loadModels() {
  try {
    const info = await (await api("/api/models")).json();
    $("models").textContent = info.models.map((m) => `${m.index}: ${m.name} (${m.tokenizer}, ${m.outputs} outputs)`)
      .join(" · ");
    for (const select of document.querySelectorAll(".model-select")) {
      for (const m of info.models) select.append(new Option(`${m.index}: ${m.name}`, m.index));
      select.disabled = info.models.length < 2;
    }
    $("compare-btn").hidden = info.models.length < 2;
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------- generate
async function generate() {
  showError("");
  const out = $("gen-out");
  out.textContent = "";
  out.dataset.pieces = "0";
  out.dataset.state = "running";
  const body = { prompt: $("prompt").value, model: Number($("gen-model").value || 0),
                 max_tokens: numberOf("max-tokens", true), temperature: numberOf("temperature"),
                 top_k: numberOf("top-k", true), top_p: numberOf("top-p") };
  const seed = numberOf("seed", true);
  if (seed !== null) body.seed = seed;
  for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
  controller = new AbortController();
  $("generate-btn").disabled = true;
  $("stop-btn").disabled = false;
  try {
    const response = await api("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
                                                  body: JSON.stringify(body), signal: controller.signal });
    await readEvents(response, out);
  } catch (e) {
    if (e.name === "AbortError") out.dataset.state = "stopped";
    else { out.dataset.state = "error"; showError(e.message); }
  } finally {
    controller = null;
    $("generate-btn").disabled = false;
    $("stop-btn").disabled = true;
  }
}

async function readEvents(response, out) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      onEvent(buffer.slice(0, end), out);
      buffer = buffer.slice(end + 2);
    }
  }
  if (out.dataset.state === "running") out.dataset.state = "done";
}

function onEvent(chunk, out) {
  let event = "message", data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  const d = JSON.parse(data);
  if (event === "message") {
    out.append(d.text);
    out.dataset.pieces = String(Number(out.dataset.pieces) + 1);
  } else if (event === "error") {
    out.dataset.state = "error";
    showError(d.error);
  } else if (event === "done") {
    out.dataset.state = d.stopped === "done" ? "done" : "stopped";
    if (d.stopped !== "done") showError(`Generation stopped: ${d.stopped}.`);
  }
}

// ---------------------------------------------------------------- score / inspect
function costColour(bits) {
  const x = Math.min(Math.max(bits, 0) / MAX_BITS, 1);
  return `hsl(${Math.round(120 * (1 - x))}, 80%, ${Math.round(86 - 26 * x)}%)`;
}

function diffColour(diff) {
  const x = Math.min(Math.abs(diff) / MAX_DIFF, 1);
  return diff < 0 ? `hsl(215, 80%, ${Math.round(95 - 35 * x)}%)` : `hsl(0, 80%, ${Math.round(95 - 35 * x)}%)`;
}

async function score(compare) {
  showError("");
  hideTip(true);
  const file = $("score-file").files[0];
  const model = Number($("score-model").value || 0);
  let path = compare ? "/api/compare" : "/api/score", options;
  if (file) {
    path += compare ? "" : `?model=${model}`;
    options = { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file };
  } else {
    options = { method: "POST", headers: { "Content-Type": "application/json" },
                body: JSON.stringify(compare ? { text: $("score-text").value }
                                             : { text: $("score-text").value, model: model }) };
  }
  for (const b of [$("score-btn"), $("compare-btn")]) b.disabled = true;
  try {
    const d = await (await api(path, options)).json();
    if (compare) renderCompare(d); else renderScore(d);
  } catch (e) {
    showError(e.message);
  } finally {
    for (const b of [$("score-btn"), $("compare-btn")]) b.disabled = false;
  }
}

function renderSummary(summary, label) {
  const box = $("summary");
  const line = el("div");
  if (label) line.append(el("span", label + ": "));
  const items = [["sum-tokens", "tokens", summary.tokens, 0], ["sum-chars", "characters", summary.characters, 0],
                 ["sum-bits", "total bits", summary.bits, 2], ["sum-bpc", "bits per character", summary.bpc, 4],
                 ["sum-ppl", "perplexity", summary.ppl, 2]];
  items.forEach(([id, name, value, digits], i) => {
    const b = el("b", fmt(value, digits));
    b.id = label ? `${id}-${label}` : id;
    b.dataset.value = String(value);
    line.append(`${i ? " · " : ""}${name} `, b);
  });
  box.append(line);
  box.hidden = false;
}

function renderLegend(diffMode) {
  const legend = $("legend");
  legend.textContent = "";
  const bar = el("div", null, "bar");
  const stops = [];
  for (let i = 0; i <= 8; i++) {
    stops.push(diffMode ? diffColour(-MAX_DIFF + (2 * MAX_DIFF * i) / 8) : costColour((MAX_BITS * i) / 8));
  }
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const ticks = el("div", null, "ticks");
  const labels = diffMode ? [`−${MAX_DIFF}`, `−${MAX_DIFF / 2}`, "0", `+${MAX_DIFF / 2}`, `+${MAX_DIFF}`]
                          : ["0", String(MAX_BITS / 4), String(MAX_BITS / 2), String((3 * MAX_BITS) / 4), `${MAX_BITS}+`];
  for (const t of labels) ticks.append(el("span", t));
  const scale = el("div");
  scale.append(bar, ticks);
  legend.append(el("span", diffMode ? "bits of B − bits of A (blue: B better)" : "cost in bits"), scale);
  legend.hidden = false;
}

function tokenSpan(t, i, colour) {
  const span = el("span", t.eos ? "↵" : t.text, "tok" + (t.eos ? " eos" : "") + (t.bucket ? " rare" : ""));
  span.style.background = colour;
  span.dataset.i = String(i);
  span.dataset.bits = String(t.bits);
  if (t.bucket) span.dataset.bucket = t.bucket;
  return span;
}

function renderTokens(tokens, colourOf, mode) {
  const box = $("tokens");
  box.textContent = "";
  box.dataset.mode = mode;
  const frag = document.createDocumentFragment();
  tokens.forEach((t, i) => {
    frag.append(tokenSpan(t, i, colourOf(i)));
    if (t.eos) frag.append(document.createElement("br"));
  });
  box.append(frag);
}

let current = null;   // what the token spans show: {mode, result}

function renderScore(d) {
  current = { mode: "score", result: d };
  $("summary").textContent = "";
  $("compare-note").hidden = true;
  renderSummary(d.summary);
  renderLegend(false);
  renderTokens(d.tokens, (i) => costColour(d.tokens[i].bits), "score");
}

function renderCompare(d) {
  current = { mode: "compare", result: d };
  $("summary").textContent = "";
  renderSummary(d.a.summary, "A");
  renderSummary(d.b.summary, "B");
  const note = $("compare-note");
  if (d.diff === null) {
    note.textContent = d.reason;
    note.hidden = false;
    $("legend").hidden = true;
    $("tokens").textContent = "";
    return;
  }
  note.hidden = true;
  renderLegend(true);
  renderTokens(d.a.tokens, (i) => diffColour(d.diff[i]), "compare");
}

// ---------------------------------------------------------------- token details
function detailsOf(t, title) {
  const box = el("div");
  if (title) box.append(el("div", title, "bucket"));
  box.append(el("div", `${fmt(t.bits, 2)} bits · P(token) = ${fmt(t.p, 5)}`));
  if (t.bucket) {
    box.append(el("div", `rare word, predicted through bucket ${t.bucket}`, "bucket"));
    box.append(el("div", `P(bucket | history) = ${fmt(t.p_bucket, 5)} · P(word | bucket) = ${fmt(t.p_word, 5)}`));
  }
  if (t.top && t.top.length) {
    box.append(el("div", `the model's top ${t.top.length} here:`, "bucket"));
    const table = el("table");
    for (const alt of t.top) {
      const row = el("tr");
      row.append(el("td", alt.bucket ? `${alt.token} (bucket)` : shown(alt.token)), el("td", fmt(alt.p, 4)));
      table.append(row);
    }
    box.append(table);
  }
  return box;
}

function showTip(span) {
  if (!current) return;
  const i = Number(span.dataset.i);
  const tip = $("tip");
  tip.textContent = "";
  const r = current.result;
  const t = current.mode === "score" ? r.tokens[i] : r.a.tokens[i];
  tip.append(el("div", t.eos ? "↵ (end of line)" : shown(t.text), "word"));
  if (current.mode === "score") {
    tip.append(detailsOf(t));
  } else {
    const diff = r.diff[i];
    tip.append(el("div", `B − A: ${diff > 0 ? "+" : ""}${fmt(diff, 2)} bits`));
    tip.append(detailsOf(t, "model A"), detailsOf(r.b.tokens[i], "model B"));
  }
  tip.hidden = false;
  const rect = span.getBoundingClientRect();
  const left = Math.min(rect.left, window.innerWidth - tip.offsetWidth - 8);
  let top = rect.bottom + 6;
  if (top + tip.offsetHeight > window.innerHeight) top = Math.max(4, rect.top - tip.offsetHeight - 6);
  tip.style.left = `${Math.max(4, left)}px`;
  tip.style.top = `${top}px`;
}

function hideTip(force) {
  if (pinned && !force) return;
  if (pinned) pinned.classList.remove("pinned");
  pinned = null;
  $("tip").hidden = true;
}

function wire() {
  $("generate-btn").addEventListener("click", generate);
  $("stop-btn").addEventListener("click", () => { if (controller) controller.abort(); });
  $("score-btn").addEventListener("click", () => score(false));
  $("compare-btn").addEventListener("click", () => score(true));
  $("clear-file").addEventListener("click", () => { $("score-file").value = ""; });
  const tokens = $("tokens");
  tokens.addEventListener("mouseover", (e) => {
    if (e.target.classList.contains("tok") && !pinned) showTip(e.target);
  });
  tokens.addEventListener("mouseout", (e) => { if (e.target.classList.contains("tok")) hideTip(false); });
  tokens.addEventListener("click", (e) => {   // a tap pins the details; a second tap unpins
    if (!e.target.classList.contains("tok")) return;
    const same = pinned === e.target;
    hideTip(true);
    if (!same) { pinned = e.target; pinned.classList.add("pinned"); showTip(pinned); }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideTip(true); });
}

wire();
loadModels();
