"use strict";
// The spinedx workstation page: plain JavaScript, no build step, nothing loaded from elsewhere. The images are the
// reader's canonical grid (rows head->feet, columns anterior->posterior), shown by the viewer shared with the reader
// page (viewer.js): a box drawn here is in those pixel coordinates, the manifest's.
//
// The box is exactly the pixels the drag covered: the pixel under the pointer when the button went down and the
// pixel under it when the button came up are both inside, saved half-open (x0, y0, x1, y1) = (min x, min y,
// max x + 1, max y + 1), whatever the zoom. Slice numbers are shown from 1; the API takes them from 0.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "spinedx-token";
const S = {
  token: null, health: null, cases: [], key: null, caseDoc: null, version: null, dirty: false,
  box: null, t1Box: null, t1Reg: null, t1Drawn: null, mapTimer: null, mapSeq: 0, drag: null,
  undo: [], redo: [], busy: false, viewer: null,
};

// ---- auth and fetch -------------------------------------------------------------------------------------
async function api(path, opts = {}) { return apiFetch(path, opts, S.token); }

function status(text, cls) { const s = $("status"); s.textContent = text; s.className = "status " + (cls || ""); }

// The alert at the top of the page: what keeps the open case from being shown (or null to hide it).
function alertTop(text) { const a = $("alert"); a.textContent = text || ""; a.hidden = !text; }

const caseUrl = (key, rest = "") => `/api/cases/${encodeURIComponent(key)}${rest}`;

// ---- case list ------------------------------------------------------------------------------------------
function caseState(c) { return !c.images ? "no images" : c.predicted ? "predicted" : c.annotated ? "annotated" : "unannotated"; }

function renderCases() {
  const q = $("search").value.trim().toLowerCase();
  const f = $("filter").value;
  const ul = $("cases");
  ul.replaceChildren();
  let shown = 0;
  for (const c of S.cases) {
    const st = caseState(c);
    if (q && !c.patient_id.toLowerCase().includes(q)) continue;
    if (f === "unannotated" && c.annotated) continue;
    if (f === "annotated" && !c.annotated) continue;
    if (f === "predicted" && !c.predicted) continue;
    if (f === "noimages" && c.images) continue;
    const li = document.createElement("li");
    if (c.case === S.key) li.className = "active";
    const b = document.createElement("button");
    b.type = "button"; b.dataset.case = c.patient_id; b.dataset.key = c.case;
    b.setAttribute("data-testid", "case-item");
    const name = document.createElement("span"); name.textContent = c.patient_id;
    const badge = document.createElement("span"); badge.className = "badge " + st.replace(" ", ""); badge.textContent = st;
    b.append(name, badge);
    b.addEventListener("click", () => openCase(c.case));
    li.append(b);
    if (c.problem) {
      const p = document.createElement("p"); p.className = "problem"; p.textContent = c.problem;
      p.setAttribute("data-testid", "case-problem");
      li.append(p);
    }
    ul.append(li); shown++;
  }
  const n = S.cases.length, a = S.cases.filter((c) => c.annotated).length, p = S.cases.filter((c) => c.predicted).length;
  const bad = S.cases.filter((c) => !c.images).length;
  $("counts").textContent = `${shown} shown of ${n}; ${a} annotated, ${p} predicted` + (bad ? `; ${bad} cannot be shown` : "");
}

async function loadCases() { S.cases = await (await api("/api/cases")).json(); renderCases(); }

// ---- the viewer and the page's marks ----------------------------------------------------------------------
function lesionSlices() { return parseSlices($("slices").value).map((n) => n - 1); }

function drawMarks(which, ctx, g) {
  if (which === "t2" && S.box) {
    const [x0, y0] = Viewer.toCanvas(g, S.box[0], S.box[1]), [x1, y1] = Viewer.toCanvas(g, S.box[2], S.box[3]);
    const on = lesionSlices().includes(S.viewer.k);
    ctx.strokeStyle = on ? "#ffd21f" : "rgba(255,210,31,0.55)";
    ctx.lineWidth = 2; ctx.setLineDash(on ? [] : [6, 4]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }
  if (which === "t1") {
    // only a mapping made for the box as it is now: never a box from the middle of a drag
    const m = S.t1Box && S.box && S.t1Box.forBox === S.box.join(",") && S.t1Box.k === S.viewer.k ? S.t1Box : null;
    S.t1Drawn = m ? m.forBox : null;
    if (m) {
      ctx.strokeStyle = "#3fd0ff"; ctx.lineWidth = 2; ctx.setLineDash([6, 4]);
      ctx.beginPath();
      const c = m.corners, order = [0, 1, 3, 2];
      order.forEach((i, n) => { const [px, py] = Viewer.toCanvas(g, c[i][0], c[i][1]); n ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
      ctx.closePath(); ctx.stroke(); ctx.setLineDash([]);
    }
  }
}

function infoExtra(which) {
  if (which === "t2") return lesionSlices().includes(S.viewer.k) ? " · lesion slice" : "";
  if (!S.box) return " · follows T2W";
  if (S.t1Drawn) return " · box mapped from T2W" + (S.t1Reg ? ` (${S.t1Reg})` : "");
  return " · mapping the box …";
}

// ---- the box: an exact pixel box from the drag --------------------------------------------------------------
// The pixel under the pointer (column, row), inside the image. A pointer on a pixel's top or left edge is in that
// pixel; the edge is found within a millionth of a pixel, so the rounding of a zoom factor cannot move it.
function pixelOf(img) {
  const d = S.caseDoc.t2, at = (v, n) => Math.max(0, Math.min(n - 1, Math.floor(v + 1e-6)));
  return [at(img[0], d.columns), at(img[1], d.rows)];
}

function boxOf(a, b) { return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]) + 1, Math.max(a[1], b[1]) + 1]; }

function boxHit(img) {
  if (!S.box) return null;
  const g = S.viewer.geom("t2");
  const [cx, cy] = Viewer.toCanvas(g, img[0], img[1]);
  const [x0, y0] = Viewer.toCanvas(g, S.box[0], S.box[1]), [x1, y1] = Viewer.toCanvas(g, S.box[2], S.box[3]);
  const near = (a, b) => Math.abs(a - b) <= 7;
  const hx = near(cx, x0) ? "x0" : near(cx, x1) ? "x1" : null, hy = near(cy, y0) ? "y0" : near(cy, y1) ? "y1" : null;
  const inside = cx > x0 - 7 && cx < x1 + 7 && cy > y0 - 7 && cy < y1 + 7;
  if (inside && (hx || hy)) return { resize: [hx, hy] };
  if (cx > x0 && cx < x1 && cy > y0 && cy < y1) return { move: true };
  return null;
}

const boxTool = {
  down(img) {
    const hit = boxHit(img), p = pixelOf(img);
    S.drag = { start: p, before: snapshot(), changed: false, box: S.box ? S.box.slice() : null,
               mode: hit && hit.move ? "move" : hit && hit.resize ? "resize" : "draw", edges: hit && hit.resize };
  },
  move(img) {
    const d = S.drag;
    if (!d) return;
    const p = pixelOf(img), c = S.caseDoc.t2;
    if (!d.changed && p[0] === d.start[0] && p[1] === d.start[1]) return; // still on the first pixel: nothing drawn
    let box;
    if (d.mode === "draw") box = boxOf(d.start, p);
    else if (d.mode === "move") {
      const dx = Math.max(-d.box[0], Math.min(c.columns - d.box[2], p[0] - d.start[0]));
      const dy = Math.max(-d.box[1], Math.min(c.rows - d.box[3], p[1] - d.start[1]));
      box = [d.box[0] + dx, d.box[1] + dy, d.box[2] + dx, d.box[3] + dy];
    } else {
      // the grabbed edge goes to the pixel under the pointer, which stays inside the box
      let [x0, y0, x1, y1] = d.box;
      if (d.edges[0] === "x0") x0 = p[0]; if (d.edges[0] === "x1") x1 = p[0] + 1;
      if (d.edges[1] === "y0") y0 = p[1]; if (d.edges[1] === "y1") y1 = p[1] + 1;
      const xs = x1 > x0 ? [x0, x1] : [x1 - 1, x0 + 1], ys = y1 > y0 ? [y0, y1] : [y1 - 1, y0 + 1];
      box = [xs[0], ys[0], xs[1], ys[1]];
    }
    d.changed = true;
    setBox(box);
    scheduleMapping(false, 60);
  },
  up(img) {
    const d = S.drag;
    if (!d) return;
    boxTool.move(img); // the pixel under the pointer at release is inside the box
    S.drag = null;
    if (!d.changed) return;
    pushUndo(d.before);
    if (!lesionSlices().length) setCentre(false);
    scheduleMapping(true, 0);
  },
};

function setBox(box) {
  S.box = box;
  renderBox();
  setDirty(true);
  S.viewer.drawAll();
}

function renderBox() {
  $("box").textContent = S.box ? S.box.join(",") : "none: drag on the T2W image";
  $("box-size").textContent = S.box && S.caseDoc ? boxSize(S.box, S.caseDoc.t2.spacing_mm) : "";
}

// ---- undo / redo of the box and the lesion slices ------------------------------------------------------------
function snapshot() { return { box: S.box ? S.box.slice() : null, slices: $("slices").value }; }
function same(a, b) { return String(a.box) === String(b.box) && a.slices === b.slices; }

function pushUndo(before) {
  if (same(before, snapshot())) return;
  S.undo.push(before); S.redo = [];
  if (S.undo.length > 200) S.undo.shift();
  syncUndo();
}

function restore(snap) {
  S.box = snap.box ? snap.box.slice() : null;
  $("slices").value = snap.slices;
  renderBox(); setDirty(true);
  S.t1Box = null;
  S.viewer.drawAll();
  if (S.box) scheduleMapping(true, 0);
}

function undo() { if (!S.undo.length) return; S.redo.push(snapshot()); restore(S.undo.pop()); syncUndo(); status("undone"); }
function redo() { if (!S.redo.length) return; S.undo.push(snapshot()); restore(S.redo.pop()); syncUndo(); status("redone"); }
function syncUndo() { $("undo").disabled = !S.undo.length; $("redo").disabled = !S.redo.length; }

// ---- T1 following -------------------------------------------------------------------------------------------
function onSlice() {
  // registered when on: the server caches the registration per box and slices, so scrolling does not redo it
  if (S.box) scheduleMapping(true, 30);
}

function scheduleMapping(register, delay) {
  clearTimeout(S.mapTimer);
  S.mapTimer = setTimeout(() => updateMapping(register), delay);
}

async function updateMapping(register) {
  if (!S.caseDoc) return;
  if (!S.box) { S.t1Box = null; S.viewer.draw("t1"); return; }
  const seq = ++S.mapSeq, key = S.key, box = S.box.slice(), k = S.viewer.k;
  const params = new URLSearchParams({ k, box: box.join(",") });
  const sl = lesionSlices().filter((v) => v >= 0 && v < S.caseDoc.t2.slices);
  if (sl.length) params.set("slices", sl.join(";"));
  if (register && S.health.register) params.set("register", "true");
  try {
    const doc = await (await api(caseUrl(key, `/mapping?${params}`))).json();
    if (seq !== S.mapSeq || key !== S.key) return;
    S.t1Box = Object.assign({}, doc.t1_box, { forBox: box.join(","), k });
    S.t1Reg = doc.registration ? (doc.registration.accepted ? "registered" : "geometry; registration not used") : (register ? null : "geometry");
    S.viewer.setT1Map(doc.t1_slice_for_t2);
    S.viewer.setT1Slice(doc.t1_slice);
  } catch (e) { if (seq === S.mapSeq) status(e.message, "error"); }
}

function parseSlices(text) {
  return text.split(/[;,\s]+/).filter((t) => t !== "").map(Number).filter((v) => Number.isInteger(v));
}

// ---- the case -------------------------------------------------------------------------------------------
async function openCase(key) {
  const c = S.cases.find((x) => x.case === key);
  const name = c ? c.patient_id : key;
  if (S.dirty && S.key && key !== S.key && !confirm(`Unsaved changes on ${S.caseDoc.patient_id}. Open ${name} anyway?`)) return;
  if (c && c.problem) { closeCase(key); alertTop(`${name} cannot be shown: ${c.problem}`); status(`${name}: no images`, "error"); return; }
  status("opening " + name + " ...");
  let doc;
  try { doc = await (await api(caseUrl(key))).json(); } catch (e) {
    closeCase(key); alertTop(`${name} cannot be opened: ${e.message}`); status(e.message, "error"); return;
  }
  alertTop(null);
  S.key = key; S.caseDoc = doc; S.version = doc.version;
  S.t1Box = null; S.t1Reg = null; S.undo = []; S.redo = []; syncUndo();
  fillForm(doc.annotation);
  $("case-title").textContent = doc.patient_id;
  const a = doc.annotation;
  S.viewer.open(doc, a.lesion_slices.length ? a.lesion_slices[Math.floor(a.lesion_slices.length / 2)] : undefined);
  if (S.box) scheduleMapping(true, 0);
  showPrediction(doc.prediction);
  setDirty(false);
  $("predict").disabled = !S.health.model;
  $("predict").title = S.health.model ? "Predict (Ctrl+Enter): saves first, then asks the model" : "start spinedx serve with --model RUN to predict";
  status(`${doc.patient_id} open: T2W ${doc.t2.slices} slices, T1W ${doc.t1.slices} slices`, "ok");
  renderCases();
  S.viewer.focus();
}

function closeCase(key) {
  S.key = key; S.caseDoc = null; S.box = null; S.t1Box = null; S.undo = []; S.redo = []; syncUndo();
  S.viewer.close(); $("case-title").textContent = "no case open"; renderBox(); showPrediction(null); setDirty(false);
  $("predict").disabled = true; renderCases();
}

function fillForm(a) {
  $("label").value = a.label || "";
  $("slices").value = a.lesion_slices.map((k) => k + 1).join(";");
  S.box = a.box ? a.box.slice() : null;
  renderBox();
  for (const f of S.health.features) {
    const v = a.features[f.name];
    $("f-" + f.name).value = v === undefined || v === null ? "" : String(v);
  }
  for (const r of S.health.readers) $("r-" + r).value = a.readers[r] || "";
}

function buildForm() {
  const fbox = $("features");
  for (const f of S.health.features) {
    const lab = document.createElement("label"); lab.title = f.description;
    const span = document.createElement("span"); span.textContent = f.description;
    const sel = document.createElement("select"); sel.id = "f-" + f.name; sel.dataset.feature = f.name;
    for (const [v, t] of [["", "not scored"], ["0", "absent"], ["1", "present"]]) {
      const o = document.createElement("option"); o.value = v; o.textContent = t; sel.append(o);
    }
    sel.addEventListener("change", () => setDirty(true));
    lab.append(span, sel); fbox.append(lab);
  }
  const rbox = $("readers");
  for (const r of S.health.readers) {
    const lab = document.createElement("label");
    const span = document.createElement("span"); span.textContent = r.replace(/^reader_/, "reader ");
    const sel = document.createElement("select"); sel.id = "r-" + r;
    for (const [v, t] of [["", "no call"], ["benign", "benign"], ["malignant", "malignant"]]) {
      const o = document.createElement("option"); o.value = v; o.textContent = t; sel.append(o);
    }
    sel.addEventListener("change", () => setDirty(true));
    lab.append(span, sel); rbox.append(lab);
  }
}

function setDirty(d) {
  S.dirty = d;
  $("save").disabled = !S.caseDoc || !d || S.busy;
  if (d) status("unsaved changes");
}

// The slice numbers typed (from 1) as the API's indices (from 0), or an error naming the bad number.
function slicesForApi() {
  const text = $("slices").value.trim();
  if (!text) return { value: null };
  const n = S.caseDoc.t2.slices, bad = text.split(/[;,\s]+/).filter((t) => t !== "" && !/^\d+$/.test(t));
  if (bad.length) return { error: `lesion slices: '${bad[0]}' is not a slice number (1-${n})` };
  const nums = parseSlices(text), out = nums.find((v) => v < 1 || v > n);
  if (out !== undefined) return { error: `lesion slices: ${out} is not a slice of this series (slices 1-${n})` };
  return { value: nums.map((v) => v - 1) };
}

function body(slices) {
  const features = {};
  for (const f of S.health.features) { const v = $("f-" + f.name).value; features[f.name] = v === "" ? null : Number(v); }
  const readers = {};
  for (const r of S.health.readers) readers[r] = $("r-" + r).value || null;
  return { label: $("label").value || null, lesion_slices: slices, box: S.box ? S.box : null, features, readers };
}

async function save() {
  if (!S.caseDoc || S.busy) return false;
  const sl = slicesForApi();
  if (sl.error) { status("not saved: " + sl.error, "error"); return false; }
  status("saving ...");
  try {
    const r = await api(caseUrl(S.key, "/annotation"), {
      method: "PUT", headers: { "Content-Type": "application/json", "If-Match": `"${S.version}"` }, body: JSON.stringify(body(sl.value)) });
    const doc = await r.json();
    S.version = doc.version;
    fillForm(doc.annotation);
    setDirty(false);
    status(`saved ${doc.patient_id} (version ${doc.version.slice(0, 8)})`, "ok");
    await loadCases();
    S.viewer.drawAll();
    return true;
  } catch (e) {
    status("not saved: " + e.message, "error");
    return false;
  }
}

// ---- predicting, with a progress indicator -------------------------------------------------------------------
function progress(text) {
  const box = $("predict-progress");
  clearInterval(S.progressTimer);
  if (!text) { box.hidden = true; return; }
  const t0 = performance.now();
  const tick = () => { $("progress-text").textContent = `${text} ${((performance.now() - t0) / 1000).toFixed(0)} s`; };
  tick(); box.hidden = false;
  S.progressTimer = setInterval(tick, 250);
}

async function predict() {
  if (!S.caseDoc || S.busy || !S.health.model) return;
  if (S.dirty && !(await save())) return;
  const key = S.key, name = S.caseDoc.patient_id, m = S.health.model;
  S.busy = true; $("predict").disabled = true; $("save").disabled = true;
  try {
    // One request: the probability, the decision and the heatmap overlays come together (about 2 s for ten fold
    // models on two cores, benchmarks/serve.py); the progress indicator counts the seconds meanwhile.
    progress(`predicting ${name} with heatmaps: ${m.folds.length} fold models …`);
    status("predicting " + name + " ...");
    const ex = await (await api(caseUrl(key, "/explain"), { method: "POST" })).json();
    if (key === S.key) await showPrediction(ex);
    await loadCases();
    status(`predicted ${name} (with ${ex.explanation ? ex.explanation.label : "heatmap"} overlays)`, "ok");
  } catch (e) { status("prediction failed: " + e.message, "error"); }
  progress(null);
  S.busy = false;
  $("predict").disabled = !S.health.model || !S.caseDoc;
  setDirty(S.dirty);
}

// The result panel: the one place the model's answer is drawn (the server decides its content).
async function showPrediction(p) {
  const box = $("result");
  if (!p) { box.hidden = true; $("summary").textContent = ""; return; }
  box.hidden = false;
  // The decision contract (prediction.json): benign | malignant | refer. Refer is shown as refer, in a neutral
  // colour with its reasons, never as red or green; the probability is the calibrated one.
  $("probability").textContent = p.probability.toFixed(3);
  const decision = p.decision || p.call;
  $("call").textContent = decision === "refer" ? "refer (indeterminate)" : decision;
  $("call").className = decision;
  $("call").dataset.testid = "decision";
  const uncal = p.probability_uncalibrated !== undefined && p.probability_uncalibrated !== p.probability
    ? ` (uncalibrated ${p.probability_uncalibrated.toFixed(3)})` : "";
  $("threshold").textContent = p.conformal_set
    ? `conformal set {${p.conformal_set.join(", ")}} at alpha ${p.alpha}${uncal}`
    : `at the run's threshold ${p.threshold}${uncal}`;
  const extra = (id, cls) => {
    let el = $(id);
    if (!el) {
      el = document.createElement("p"); el.id = id; el.className = cls; el.dataset.testid = id;
      $("call").closest("p").after(el);
    }
    return el;
  };
  const why = extra("refer-reasons", "refer-reasons");
  why.hidden = decision !== "refer";
  why.textContent = decision === "refer" ? `Refer: ${p.refer_reasons_text || "no reason recorded"}.` : "";
  // beside the probability: what the model was trained on (a synthetic phantom says so), and a partial decision
  const trained = extra("trained-on", "trained-on");
  const t = p.trained_on;
  const synthetic = p.synthetic_training === true;
  trained.hidden = !(synthetic || p.decision_note);
  trained.textContent = (synthetic ? "Trained on a synthetic cohort" +
    (t && t.n_patients ? ` (${t.n_patients} simulated patients)` : "") +
    ": this probability describes a simulation, not real patients. " : "") + (p.decision_note ? `Note: ${p.decision_note}.` : "");
  $("summary").textContent = `p(malignant) ${p.probability.toFixed(3)} → ${decision === "refer" ? "refer (indeterminate)" : decision} (research use only)`;
  const per = p.fold_probabilities.map((v, i) => `fold ${p.folds[i]}: ${v.toFixed(3)}`).join(", ");
  $("spread").textContent = `spread over ${p.folds.length} fold models: ${p.spread.min.toFixed(3)}-${p.spread.max.toFixed(3)} ` +
    `(sd ${p.spread.std.toFixed(3)}; ${p.spread.calls_malignant} of ${p.folds.length} call malignant). ${per}`;
  const tb = $("slice-table").querySelector("tbody"); tb.replaceChildren();
  for (const s of p.slices) {
    const tr = document.createElement("tr");
    for (const t of [String(s.slice_index + 1), s.probability.toFixed(3)]) { const td = document.createElement("td"); td.textContent = t; tr.append(td); }
    tb.append(tr);
  }
  $("pred-notes").textContent = `${p.aggregation}. Registration: ${p.registration.reason}.` +
    (p.test_time_views > 1 ? ` Each slice probability is the mean over the patch and ${p.test_time_views - 1} fixed ` +
      "affine views of it (test-time augmentation); the heatmaps are of the patch itself." : "") +
    (p.optimistic ? " The run's reported performance is optimistic (early stopping on the validation folds)." : "");
  const ov = $("overlays"); ov.replaceChildren();
  // The server names the method that made the maps (spinedx.explain.DEFAULT_METHOD); the page never assumes one.
  const ex = p.explanation, label = ex ? ex.label : "heatmap", shown = !!ex && p.slices.some((s) => s.overlay);
  $("overlay-method").textContent = shown ? `Heatmaps: ${ex.caption} of the malignant output, ${ex.aggregation || "mean of the fold models"}.` : "";
  $("heat-legend").hidden = !shown;
  // What the colours mean depends on the method (docs/explanations.md): say it, never more.
  $("heat-caption").textContent = shown ? heatLegend(ex.method) : "";
  for (const s of p.slices) {
    if (!s.overlay) continue;
    try {
      const blob = await (await api(s.overlay)).blob();
      const fig = document.createElement("figure"), cap = document.createElement("figcaption");
      // numbered from 1, like the overlay images' titles (spinedx predict)
      cap.textContent = `T2 slice ${s.slice_index + 1}`;
      const img = document.createElement("img");
      img.alt = `${label} on T1W and T2W, slice ${s.slice_index + 1}`;
      img.src = URL.createObjectURL(blob);
      fig.append(cap, img); ov.append(fig);
    } catch (e) { status(e.message, "error"); }
  }
}

// ---- keys ---------------------------------------------------------------------------------------------------
function setCentre(record = true) {
  const before = snapshot();
  const n = S.caseDoc.t2.slices;
  const c = Math.max(1, Math.min(n - 2, S.viewer.k));
  $("slices").value = [c - 1, c, c + 1].map((v) => v + 1).join(";");
  if (record) pushUndo(before);
  setDirty(true);
  S.viewer.draw("t2");
}

document.addEventListener("keydown", (ev) => {
  const ctrl = ev.ctrlKey || ev.metaKey, k = ev.key.toLowerCase();
  // the page's commands work wherever the focus is
  if (ctrl && k === "s") { ev.preventDefault(); if (S.dirty) save(); return; }
  if (ctrl && ev.key === "Enter") { ev.preventDefault(); predict(); return; }
  if (Viewer.isFormControl(document.activeElement)) return; // a form control keeps its keys (Ctrl+Z: its own text)
  if (ctrl && ((k === "z" && ev.shiftKey) || k === "y")) { ev.preventDefault(); redo(); return; }
  if (ctrl && k === "z") { ev.preventDefault(); undo(); return; }
  if (!S.caseDoc || $("signin").hidden === false) return;
  if (S.viewer.handleKey(ev)) ev.preventDefault();
});

// ---- signing in ------------------------------------------------------------------------------------------
function showSignin(message) {
  $("signin").hidden = false; $("app").hidden = true;
  status(message, "error"); $("signin-status").textContent = message;
}

async function signIn(token) {
  S.token = token;
  try { S.health = await (await api("/api/health")).json(); } catch (e) {
    S.token = null; sessionStorage.removeItem(TOKEN_KEY);
    showSignin(e.status === 401 ? "this token is not accepted by the server" : e.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  await startApp();
}

// ---- start ----------------------------------------------------------------------------------------------
function fitCanvases() {
  // two panes side by side in the viewer's width, short enough that the panes and their tools fit the window
  const cv = $("t2"), top = cv.getBoundingClientRect().top + window.scrollY;
  const byWidth = Math.floor(($("viewer").clientWidth - 36) / 2), byHeight = Math.floor(window.innerHeight - top - 64);
  const w = Math.max(240, Math.min(560, byWidth, byHeight));
  for (const id of ["t2", "t1"]) { const c = $(id); if (c.width !== w) { c.width = w; c.height = w; } }
  S.viewer.drawAll();
}

async function startApp() {
  $("signin").hidden = true; $("app").hidden = false;
  $("signout").hidden = !S.token;
  $("synthetic").hidden = !S.health.synthetic;
  if (S.health.synthetic && S.health.cohort_synthetic === false) {
    // a real study read by a model trained on a synthetic phantom: the banner says which part is synthetic
    $("synthetic").textContent = "model trained on a synthetic cohort";
  }
  const m = S.health.model;
  $("model").textContent = m ? `model: ${m.backbone}, ${m.folds.length} fold models, threshold ${m.threshold}` +
    (m.optimistic ? " (optimistic run)" : "") : "no model loaded (start with --model RUN to predict)";
  if (!$("features").children.length) buildForm();
  fitCanvases();
  await loadCases();
  status("pick a case on the left");
}

function start() {
  S.viewer = new Viewer({
    root: $("viewer"), panes: { t2: $("t2"), t1: $("t1") }, info: { t2: $("t2-info"), t1: $("t1-info") },
    foot: { t2: $("t2-wl"), t1: $("t1-wl") }, tools: { t2: $("t2-tools"), t1: $("t1-tools") },
    fetchSlice: async (which, k) => (await api(caseUrl(S.key, `/${which}/${k}.raw`))).arrayBuffer(),
    overlay: drawMarks, infoExtra, tool: boxTool, onSlice, onError: (msg) => status(msg, "error"),
  });
  S.viewer.guardControls($("form"));
  S.viewer.guardControls($("sidebar"));
  $("search").addEventListener("input", renderCases);
  $("filter").addEventListener("change", renderCases);
  $("label").addEventListener("change", () => setDirty(true));
  let slicesBefore = null;
  $("slices").addEventListener("focus", () => { slicesBefore = snapshot(); });
  $("slices").addEventListener("input", () => { setDirty(true); S.viewer.draw("t2"); });
  $("slices").addEventListener("change", () => { if (slicesBefore) pushUndo(slicesBefore); slicesBefore = snapshot(); if (S.box) scheduleMapping(true, 0); });
  $("centre").addEventListener("click", () => setCentre(true));
  $("clear-box").addEventListener("click", () => { if (!S.box) return; const b = snapshot(); S.t1Box = null; setBox(null); pushUndo(b); });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("save").addEventListener("click", save);
  $("predict").addEventListener("click", predict);
  $("signin-form").addEventListener("submit", (ev) => { ev.preventDefault(); const t = $("token").value.trim(); if (t) signIn(t); });
  $("signout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
  window.addEventListener("beforeunload", (ev) => { if (S.dirty) { ev.preventDefault(); ev.returnValue = ""; } });
  window.addEventListener("resize", () => { if (!$("app").hidden) fitCanvases(); });
  if (/(?:^|[#&])token=/.test(location.hash)) {
    // a token in the address would stay in the browser's history: it is not used, and taken out of the address bar
    history.replaceState(null, "", location.pathname);
    showSignin("a token in the address is not used (it would stay in the browser history): paste it here instead");
    return;
  }
  S.token = sessionStorage.getItem(TOKEN_KEY);
  api("/api/health").then(async (r) => { S.health = await r.json(); await startApp(); }).catch((e) => {
    if (e.status === 401) showSignin(S.token ? "the saved token is no longer accepted: sign in again" : "this server needs a token: sign in");
    else status(e.message, "error");
  });
}
start();
