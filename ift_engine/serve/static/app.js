// The ift_engine page: list workflows, draw the selected one, build its input form from the
// input schema, run it and show each node's output as its server-sent event arrives.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("ift-api-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("ift-api-key", keyInput.value); loadWorkflows(); });

function headers(extra = {}) {
  const h = { ...extra };
  if (keyInput.value) h["Authorization"] = "Bearer " + keyInput.value;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function text(value) {
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.map((v) => "- " + v).join("\n");
  return JSON.stringify(value, null, 2);
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function loadWorkflows() {
  try {
    const { workflows } = await (await api("/v1/workflows")).json();
    const list = $("workflows");
    list.replaceChildren();
    for (const wf of workflows) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.textContent = wf.name;
      button.dataset.name = wf.name;
      button.addEventListener("click", () => select(wf.name));
      item.append(button);
      list.append(item);
    }
  } catch (error) {
    setStatus("Could not list workflows: " + error.message, true);
  }
}

async function select(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.name === name);
  const wf = await (await api("/v1/workflows/" + encodeURIComponent(name))).json();
  $("detail").hidden = false;
  $("wf-name").textContent = wf.name;
  $("wf-description").textContent = wf.description || "";
  $("graph").innerHTML = await (await api("/v1/workflows/" + encodeURIComponent(name) + "/graph.svg")).text();
  buildForm(wf);
  $("nodes").replaceChildren();
  $("outputs").replaceChildren();
  $("trace").hidden = true;
  setStatus("");
}

function buildForm(wf) {
  const form = $("inputs");
  form.replaceChildren();
  for (const [name, schema] of Object.entries(wf.input_schema.properties)) {
    const label = document.createElement("label");
    label.textContent = name + (schema.description ? " (" + schema.description + ")" : "");
    label.htmlFor = "input-" + name;
    const field = schema.type === "string" ? document.createElement("textarea") : document.createElement("input");
    field.id = "input-" + name;
    field.name = name;
    field.dataset.type = schema.type;
    if (schema.type !== "string") field.placeholder = "JSON " + schema.type;
    if ("default" in schema) field.value = schema.type === "string" ? schema.default : JSON.stringify(schema.default);
    form.append(label, field);
  }
  const run = document.createElement("button");
  run.type = "submit";
  run.id = "run";
  run.textContent = "Run";
  form.append(run);
  form.onsubmit = (event) => { event.preventDefault(); runWorkflow(wf.name, form); };
}

function readInputs(form) {
  const inputs = {};
  for (const field of form.querySelectorAll("[data-type]")) {
    if (field.value === "" && field.dataset.type !== "string") continue;
    inputs[field.name] = field.dataset.type === "string" ? field.value : JSON.parse(field.value);
  }
  return inputs;
}

function nodeBox(node) {
  let box = document.getElementById("node-" + node);
  if (!box) {
    box = document.createElement("div");
    box.className = "node running";
    box.id = "node-" + node;
    box.innerHTML = "<h3><span></span><small></small></h3><div class='bar' style='width:0'></div><pre></pre>";
    box.querySelector("span").textContent = node;
    box.querySelector("small").textContent = "running";
    $("nodes").append(box);
  }
  return box;
}

function showTimings() {
  const boxes = [...document.querySelectorAll(".node[data-seconds]")];
  const longest = Math.max(...boxes.map((b) => Number(b.dataset.seconds)), 1e-9);
  for (const box of boxes) box.querySelector(".bar").style.width = (100 * Number(box.dataset.seconds) / longest) + "%";
}

// A label node's probabilities, an ensemble's members (their answers and probabilities), or a
// rerank's candidates (which member wrote each, its score, the winner): a small table, or null.
function scoresOf(data) {
  const rows = [];
  const percent = (p) => (100 * p).toFixed(1) + "%";
  const details = data.members && data.members.details;
  if (details && details.candidates) {
    details.candidates.forEach((candidate, i) => rows.push([
      (i === details.winner ? "\u2714 " : "") + (details.members ? details.members[i] : "candidate " + (i + 1)),
      details.scores[i].toFixed(3), candidate]));
  } else if (data.members) {
    for (const [member, answer] of Object.entries(data.members)) {
      const probability = answer.probabilities && answer.probabilities[answer.output];
      rows.push([member, probability === undefined ? "" : percent(probability), text(answer.output)]);
    }
  }
  if (data.probabilities) {
    const ranked = Object.entries(data.probabilities).sort((a, b) => b[1] - a[1]);
    for (const [label, p] of ranked) rows.push([data.members ? "ensemble" : "label", percent(p), label]);
  }
  if (!rows.length) return null;
  const table = document.createElement("table");
  table.className = "scores";
  for (const cells of rows) {
    const row = table.insertRow();
    for (const cell of cells) row.insertCell().textContent = cell;
  }
  return table;
}

function markGraph(node, state) {
  const shape = document.getElementById("dag-" + node);  // the node's box in the DAG picture
  if (shape) { shape.classList.remove("running", "done", "skipped"); shape.classList.add(state); }
}

function nodeFinished(data) {
  const box = nodeBox(data.node);
  box.classList.remove("running");
  if (data.skipped) {
    markGraph(data.node, "skipped");
    box.classList.add("skipped");
    box.querySelector("small").textContent = "skipped";
    box.querySelector("pre").textContent = data.skipped;
    return;
  }
  markGraph(data.node, "done");
  const round = data.iteration ? "round " + data.iteration + " · " : "";
  box.dataset.seconds = data.seconds;
  box.querySelector("small").textContent = round + data.seconds.toFixed(2) + " s" + (data.cached ? " (cached)" : "");
  box.querySelector("pre").textContent = text(data.output);
  box.querySelector(".scores")?.remove();
  const scores = scoresOf(data);
  if (scores) box.append(scores);
  showTimings();
}

function handle(event, data) {
  if (event === "node_started") {
    const box = nodeBox(data.node);
    box.classList.add("running");
    box.querySelector("small").textContent = "running";
    box.querySelector("pre").textContent = "";  // a repeated node's next round starts afresh
    markGraph(data.node, "running");
  }
  if (event === "token" && data.element === null) nodeBox(data.node).querySelector("pre").textContent += data.text;
  if (event === "node_finished") nodeFinished(data);
  if (event === "done") {
    setStatus("Done in " + data.seconds.toFixed(2) + " s");
    const outputs = $("outputs");
    outputs.replaceChildren();
    for (const [name, value] of Object.entries(data.outputs)) {
      const title = document.createElement("h3");
      title.textContent = "Output: " + name;
      const body = document.createElement("pre");
      body.className = "output";
      body.textContent = text(value);
      outputs.append(title, body);
    }
    const link = $("trace");
    link.href = URL.createObjectURL(new Blob([JSON.stringify(data.trace, null, 2)], { type: "application/json" }));
    link.hidden = false;
  }
  if (event === "error") setStatus("Failed" + (data.node ? " at node " + data.node : "") + ": " + data.message, true);
}

async function runWorkflow(name, form) {
  let inputs;
  try { inputs = readInputs(form); } catch (error) { setStatus("An input is not valid JSON: " + error.message, true); return; }
  $("nodes").replaceChildren();
  $("outputs").replaceChildren();
  $("trace").hidden = true;
  setStatus("Running…");
  try {
    const response = await api("/v1/workflows/" + encodeURIComponent(name) + "/run", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
      body: JSON.stringify({ inputs, trace: true, stream: true }),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        }
        if (data) handle(event, JSON.parse(data));
      }
    }
  } catch (error) {
    setStatus("Failed: " + error.message, true);
  }
}

loadWorkflows();
