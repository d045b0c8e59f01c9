"use strict";
// The spinedx workstation page: plain JavaScript, no build step, nothing loaded from elsewhere.
// Images are the server's PNGs of the reader's canonical grid (rows head->feet, columns anterior->posterior);
// a box drawn here is in those pixel coordinates, the manifest's.

const $ = (id) => document.getElementById(id);
const S = {
  token: null, health: null, cases: [], key: null, caseDoc: null, version: null, dirty: false,
  k: 0, box: null, t1k: 0, t1Box: null, wl: { t2: null, t1: null }, zoom: 1, pan: [0, 0],
  imgs: { t2: null, t1: null }, imgCache: new Map(), drag: null, mapTimer: null, mapSeq: 0,
};

// ---- auth and fetch -------------------------------------------------------------------------------------
(function readToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) { sessionStorage.setItem("spinedx-token", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
  S.token = sessionStorage.getItem("spinedx-token");
})();

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (S.token) headers.Authorization = "Bearer " + S.token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
    const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    err.status = r.status;
    throw err;
  }
  return r;
}

function status(text, cls) { const s = $("status"); s.textContent = text; s.className = "status " + (cls || ""); }

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
    const li = document.createElement("li");
    if (c.patient_id === S.key) li.className = "active";
    const b = document.createElement("button");
    b.type = "button"; b.dataset.testid = "case-item"; b.dataset.case = c.patient_id;
    b.setAttribute("data-testid", "case-item");
    const name = document.createElement("span"); name.textContent = c.patient_id;
    const badge = document.createElement("span"); badge.className = "badge " + st.replace(" ", ""); badge.textContent = st;
    b.append(name, badge);
    b.addEventListener("click", () => openCase(c.patient_id));
    li.append(b); ul.append(li); shown++;
  }
  const n = S.cases.length, a = S.cases.filter((c) => c.annotated).length, p = S.cases.filter((c) => c.predicted).length;
  $("counts").textContent = `${shown} shown of ${n}; ${a} annotated, ${p} predicted`;
}

async function loadCases() { S.cases = await (await api("/api/cases")).json(); renderCases(); }

// ---- images ---------------------------------------------------------------------------------------------
async function getImage(which, k) {
  const wl = S.wl[which];
  const url = `/api/cases/${encodeURIComponent(S.key)}/${which}/${k}.png?wc=${wl.c.toFixed(1)}&ww=${wl.w.toFixed(1)}`;
  if (S.imgCache.has(url)) return S.imgCache.get(url);
  const blob = await (await api(url)).blob();
  const bmp = await createImageBitmap(blob);
  S.imgCache.set(url, bmp);
  if (S.imgCache.size > 96) S.imgCache.delete(S.imgCache.keys().next().value);
  return bmp;
}

const loading = { t2: false, t1: false };
const again = { t2: false, t1: false };
async function refresh(which) {
  if (!S.caseDoc) return;
  if (loading[which]) { again[which] = true; return; }
  loading[which] = true;
  const key = S.key;
  try {
    const k = which === "t2" ? S.k : S.t1k;
    const bmp = await getImage(which, k);
    if (key === S.key) { S.imgs[which] = bmp; draw(which); }
  } catch (e) { status(e.message, "error"); }
  loading[which] = false;
  if (again[which]) { again[which] = false; refresh(which); }
}

function geom(which) {
  // image pixel (x, y) -> canvas: physical aspect from the pixel spacing, zoom and pan shared by both panes
  const d = S.caseDoc[which], cv = $(which);
  const sx = d.spacing_mm.column, sy = d.spacing_mm.row;
  const wmm = d.columns * sx, hmm = d.rows * sy;
  const base = Math.min(cv.width / wmm, cv.height / hmm) * S.zoom;
  const ox = (cv.width - wmm * base) / 2 + S.pan[0], oy = (cv.height - hmm * base) / 2 + S.pan[1];
  return { ax: base * sx, ay: base * sy, ox, oy };
}
const toCanvas = (g, x, y) => [g.ox + x * g.ax, g.oy + y * g.ay];
const toImage = (g, cx, cy) => [(cx - g.ox) / g.ax, (cy - g.oy) / g.ay];

function draw(which) {
  const cv = $(which), ctx = cv.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height);
  if (!S.caseDoc) return;
  const d = S.caseDoc[which], g = geom(which), img = S.imgs[which];
  if (img) { ctx.imageSmoothingEnabled = S.zoom < 2; ctx.drawImage(img, g.ox, g.oy, d.columns * g.ax, d.rows * g.ay); }
  const slices = parseSlices($("slices").value);
  if (which === "t2" && S.box) {
    const [x0, y0] = toCanvas(g, S.box[0], S.box[1]), [x1, y1] = toCanvas(g, S.box[2], S.box[3]);
    ctx.strokeStyle = slices.includes(S.k) ? "#ffd21f" : "rgba(255,210,31,0.55)";
    ctx.lineWidth = 2; ctx.setLineDash(slices.includes(S.k) ? [] : [6, 4]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  if (which === "t1" && S.t1Box) {
    ctx.strokeStyle = "#3fd0ff"; ctx.lineWidth = 2; ctx.setLineDash([6, 4]);
    ctx.beginPath();
    const c = S.t1Box.corners, order = [0, 1, 3, 2];
    order.forEach((i, n) => { const [px, py] = toCanvas(g, c[i][0], c[i][1]); n ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
    ctx.closePath(); ctx.stroke();
  }
  ctx.setLineDash([]);
  const k = which === "t2" ? S.k : S.t1k;
  const lesion = which === "t2" && slices.includes(S.k) ? " · lesion slice" : "";
  $(which + "-info").textContent = `slice ${k} of ${d.slices - 1}${lesion}` +
    (which === "t1" ? (S.t1Box ? " · box mapped from T2W" + (S.t1Reg ? ` (${S.t1Reg})` : "") : " · follows T2W") : "");
  $(which + "-wl").textContent = `W ${S.wl[which].w.toFixed(0)} / L ${S.wl[which].c.toFixed(0)} · zoom ${S.zoom.toFixed(2)}x`;
}
function drawAll() { draw("t2"); draw("t1"); }

// ---- slices and T1 following ----------------------------------------------------------------------------
function setSlice(k) {
  if (!S.caseDoc) return;
  const n = S.caseDoc.t2.slices;
  k = Math.max(0, Math.min(n - 1, k));
  if (k === S.k && S.imgs.t2) return;
  S.k = k;
  S.t1k = S.caseDoc.t1_slice_for_t2[k];
  refresh("t2");
  // registered when on: the server caches the registration per box and slices, so scrolling does not redo it
  if (S.box) scheduleMapping(true, 0); else refresh("t1");
}

function scheduleMapping(register, delay) {
  clearTimeout(S.mapTimer);
  S.mapTimer = setTimeout(() => updateMapping(register), delay);
}

async function updateMapping(register) {
  if (!S.caseDoc || !S.box) { S.t1Box = null; refresh("t1"); return; }
  const seq = ++S.mapSeq;
  const params = new URLSearchParams({ k: S.k, box: S.box.join(",") });
  const sl = parseSlices($("slices").value);
  if (sl.length) params.set("slices", sl.join(";"));
  if (register && S.health.register) params.set("register", "true");
  try {
    const doc = await (await api(`/api/cases/${encodeURIComponent(S.key)}/mapping?${params}`)).json();
    if (seq !== S.mapSeq) return;
    S.t1Box = doc.t1_box; S.t1k = doc.t1_slice;
    S.caseDoc.t1_slice_for_t2 = doc.t1_slice_for_t2;
    S.t1Reg = doc.registration ? (doc.registration.accepted ? "registered" : "geometry; registration not used") : (register ? null : "geometry");
    refresh("t1");
  } catch (e) { if (seq === S.mapSeq) status(e.message, "error"); }
}

function parseSlices(text) {
  return text.split(/[;,\s]+/).filter((t) => t !== "").map(Number).filter((v) => Number.isInteger(v));
}

// ---- the case -------------------------------------------------------------------------------------------
async function openCase(key) {
  if (S.dirty && S.key && key !== S.key && !confirm(`Unsaved changes on ${S.key}. Open ${key} anyway?`)) return;
  status("opening " + key + " ...");
  let doc;
  try { doc = await (await api(`/api/cases/${encodeURIComponent(key)}`)).json(); } catch (e) { status(e.message, "error"); return; }
  S.key = key; S.caseDoc = doc; S.version = doc.version; S.imgCache.clear(); S.imgs = { t2: null, t1: null };
  S.zoom = 1; S.pan = [0, 0]; S.t1Box = null; S.t1Reg = null;
  S.wl = { t2: { c: doc.t2.window.center, w: doc.t2.window.width }, t1: { c: doc.t1.window.center, w: doc.t1.window.width } };
  fillForm(doc.annotation);
  $("case-title").textContent = key;
  const a = doc.annotation;
  S.k = -1;
  setSlice(a.lesion_slices.length ? a.lesion_slices[Math.floor(a.lesion_slices.length / 2)] : Math.floor(doc.t2.slices / 2));
  if (S.box) scheduleMapping(true, 0);
  showPrediction(doc.prediction);
  setDirty(false);
  $("predict").disabled = !S.health.model;
  $("predict").title = S.health.model ? "" : "start spinedx serve with --model RUN to predict";
  status(`${key} open: T2W ${doc.t2.slices} slices, T1W ${doc.t1.slices} slices`, "ok");
  renderCases();
}

function fillForm(a) {
  $("label").value = a.label || "";
  $("slices").value = a.lesion_slices.join(";");
  S.box = a.box ? a.box.slice() : null;
  $("box").textContent = S.box ? S.box.join(",") : "none: drag on the T2W image";
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
  $("save").disabled = !S.caseDoc || !d;
  if (d) status("unsaved changes");
}

function body() {
  const features = {};
  for (const f of S.health.features) { const v = $("f-" + f.name).value; features[f.name] = v === "" ? null : Number(v); }
  const readers = {};
  for (const r of S.health.readers) readers[r] = $("r-" + r).value || null;
  return { label: $("label").value || null, lesion_slices: $("slices").value.trim() || null,
           box: S.box ? S.box : null, features, readers };
}

async function save() {
  if (!S.caseDoc) return false;
  status("saving ...");
  try {
    const r = await api(`/api/cases/${encodeURIComponent(S.key)}/annotation`, {
      method: "PUT", headers: { "Content-Type": "application/json", "If-Match": `"${S.version}"` }, body: JSON.stringify(body()) });
    const doc = await r.json();
    S.version = doc.version;
    fillForm(doc.annotation);
    setDirty(false);
    status(`saved ${S.key} (version ${doc.version.slice(0, 8)})`, "ok");
    await loadCases();
    drawAll();
    return true;
  } catch (e) {
    status((e.status === 409 ? "not saved: " : "not saved: ") + e.message, "error");
    return false;
  }
}

async function predict() {
  if (!S.caseDoc) return;
  if (S.dirty && !(await save())) return;
  status("predicting " + S.key + " ...");
  $("predict").disabled = true;
  try {
    const key = S.key;
    const doc = await (await api(`/api/cases/${encodeURIComponent(key)}/predict`, { method: "POST" })).json();
    await showPrediction(doc);
    status(`predicted ${key}; computing heatmap overlays ...`, "ok");
    await loadCases();
    const ex = await (await api(`/api/cases/${encodeURIComponent(key)}/explain`, { method: "POST" })).json();
    if (key === S.key) await showPrediction(ex);
    status(`predicted ${key} (with ${ex.explanation ? ex.explanation.label : "heatmap"} overlays)`, "ok");
  } catch (e) { status("prediction failed: " + e.message, "error"); }
  $("predict").disabled = !S.health.model;
}

async function showPrediction(p) {
  const box = $("result");
  if (!p) { box.hidden = true; return; }
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
  const per = p.fold_probabilities.map((v, i) => `fold ${p.folds[i]}: ${v.toFixed(3)}`).join(", ");
  $("spread").textContent = `spread over ${p.folds.length} fold models: ${p.spread.min.toFixed(3)}-${p.spread.max.toFixed(3)} ` +
    `(sd ${p.spread.std.toFixed(3)}; ${p.spread.calls_malignant} of ${p.folds.length} call malignant). ${per}`;
  const tb = $("slice-table").querySelector("tbody"); tb.replaceChildren();
  for (const s of p.slices) {
    const tr = document.createElement("tr");
    for (const t of [String(s.slice_index), s.probability.toFixed(3)]) { const td = document.createElement("td"); td.textContent = t; tr.append(td); }
    tb.append(tr);
  }
  $("pred-notes").textContent = `${p.aggregation}. Registration: ${p.registration.reason}.` +
    (p.test_time_views > 1 ? ` Each slice probability is the mean over the patch and ${p.test_time_views - 1} fixed ` +
      "affine views of it (test-time augmentation); the heatmaps are of the patch itself." : "") +
    (p.optimistic ? " The run's reported performance is optimistic (early stopping on the validation folds)." : "");
  const ov = $("overlays"); ov.replaceChildren();
  // The server names the method that made the maps (spinedx.explain.DEFAULT_METHOD); the page never assumes one.
  const ex = p.explanation, label = ex ? ex.label : "heatmap";
  $("overlay-method").textContent = ex && p.slices.some((s) => s.overlay)
    ? `Heatmaps: ${ex.caption} of the malignant output, ${ex.aggregation || "mean of the fold models"}; red raises the score.` : "";
  for (const s of p.slices) {
    if (!s.overlay) continue;
    try {
      const blob = await (await api(s.overlay)).blob();
      const img = document.createElement("img");
      img.alt = `${label} on T1W and T2W, slice ${s.slice_index}`;
      img.src = URL.createObjectURL(blob);
      ov.append(img);
    } catch (e) { status(e.message, "error"); }
  }
}

// ---- mouse and keys on the panes --------------------------------------------------------------------------
function boxHit(g, cx, cy) {
  if (!S.box) return null;
  const [x0, y0] = toCanvas(g, S.box[0], S.box[1]), [x1, y1] = toCanvas(g, S.box[2], S.box[3]);
  const near = (a, b) => Math.abs(a - b) <= 7;
  const hx = near(cx, x0) ? "x0" : near(cx, x1) ? "x1" : null, hy = near(cy, y0) ? "y0" : near(cy, y1) ? "y1" : null;
  const inside = cx > x0 - 7 && cx < x1 + 7 && cy > y0 - 7 && cy < y1 + 7;
  if (inside && (hx || hy)) return { resize: [hx, hy] };
  if (cx > x0 && cx < x1 && cy > y0 && cy < y1) return { move: true };
  return null;
}

function clampBox(b) {
  const d = S.caseDoc.t2;
  let [x0, y0, x1, y1] = b.map(Math.round);
  if (x1 < x0) [x0, x1] = [x1, x0];
  if (y1 < y0) [y0, y1] = [y1, y0];
  x0 = Math.max(0, Math.min(d.columns - 1, x0)); y0 = Math.max(0, Math.min(d.rows - 1, y0));
  x1 = Math.max(x0 + 1, Math.min(d.columns, x1)); y1 = Math.max(y0 + 1, Math.min(d.rows, y1));
  return [x0, y0, x1, y1];
}

function canvasXY(ev, cv) {
  const r = cv.getBoundingClientRect();
  return [(ev.clientX - r.left) * (cv.width / r.width), (ev.clientY - r.top) * (cv.height / r.height)];
}

function attachPane(which) {
  const cv = $(which);
  cv.addEventListener("contextmenu", (ev) => ev.preventDefault());
  cv.addEventListener("pointerdown", (ev) => {
    if (!S.caseDoc) return;
    cv.setPointerCapture(ev.pointerId);
    const [cx, cy] = canvasXY(ev, cv), g = geom(which);
    if (ev.button === 2 || ev.shiftKey || (ev.button === 0 && which === "t1")) {
      S.drag = { mode: "wl", which, sx: cx, sy: cy, wl: Object.assign({}, S.wl[which]) };
    } else if (ev.button === 0 && which === "t2") {
      const hit = boxHit(g, cx, cy);
      const [ix, iy] = toImage(g, cx, cy);
      if (hit && hit.move) S.drag = { mode: "move", sx: ix, sy: iy, box: S.box.slice() };
      else if (hit && hit.resize) S.drag = { mode: "resize", edges: hit.resize, box: S.box.slice() };
      else S.drag = { mode: "draw", sx: ix, sy: iy };
    } else if (ev.button === 1) {
      S.drag = { mode: "pan", sx: cx, sy: cy, pan: S.pan.slice() };
    }
  });
  cv.addEventListener("pointermove", (ev) => {
    if (!S.drag || !S.caseDoc) return;
    const [cx, cy] = canvasXY(ev, cv), g = geom(which);
    const d = S.drag;
    if (d.mode === "wl") {
      const span = S.caseDoc[d.which].window.width;
      S.wl[d.which] = { c: d.wl.c + (cy - d.sy) * span / 400, w: Math.max(1, d.wl.w + (cx - d.sx) * span / 400) };
      refresh(d.which);
      return;
    }
    if (d.mode === "pan") { S.pan = [d.pan[0] + cx - d.sx, d.pan[1] + cy - d.sy]; drawAll(); return; }
    const [ix, iy] = toImage(g, cx, cy);
    if (d.mode === "draw") {
      if (Math.abs(ix - d.sx) < 1 && Math.abs(iy - d.sy) < 1) return;
      S.box = clampBox([Math.floor(Math.min(d.sx, ix)), Math.floor(Math.min(d.sy, iy)), Math.ceil(Math.max(d.sx, ix)), Math.ceil(Math.max(d.sy, iy))]);
    } else if (d.mode === "move") {
      const dx = Math.round(ix - d.sx), dy = Math.round(iy - d.sy);
      S.box = clampBox([d.box[0] + dx, d.box[1] + dy, d.box[2] + dx, d.box[3] + dy]);
    } else if (d.mode === "resize") {
      const b = d.box.slice();
      if (d.edges[0] === "x0") b[0] = ix; if (d.edges[0] === "x1") b[2] = ix;
      if (d.edges[1] === "y0") b[1] = iy; if (d.edges[1] === "y1") b[3] = iy;
      S.box = clampBox(b);
    }
    $("box").textContent = S.box.join(",");
    setDirty(true);
    draw("t2");
    scheduleMapping(false, 60);
  });
  const end = () => {
    if (!S.drag) return;
    const d = S.drag; S.drag = null;
    if (["draw", "move", "resize"].includes(d.mode) && S.box) {
      if (!parseSlices($("slices").value).length) setCentre();
      scheduleMapping(true, 0);
    }
  };
  cv.addEventListener("pointerup", end);
  cv.addEventListener("pointercancel", end);
  cv.addEventListener("wheel", (ev) => {
    if (!S.caseDoc) return;
    ev.preventDefault();
    if (ev.ctrlKey) { setZoom(S.zoom * (ev.deltaY < 0 ? 1.15 : 1 / 1.15)); return; }
    setSlice(S.k + (ev.deltaY > 0 ? 1 : -1));
  }, { passive: false });
}

function setZoom(z) { S.zoom = Math.max(0.5, Math.min(8, z)); drawAll(); }

function setCentre() {
  const n = S.caseDoc.t2.slices;
  const c = Math.max(1, Math.min(n - 2, S.k));
  $("slices").value = [c - 1, c, c + 1].join(";");
  setDirty(true);
  draw("t2");
}

document.addEventListener("keydown", (ev) => {
  if (!S.caseDoc || ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  if (ev.key === "ArrowUp" || ev.key === "ArrowLeft") { setSlice(S.k - 1); ev.preventDefault(); }
  else if (ev.key === "ArrowDown" || ev.key === "ArrowRight") { setSlice(S.k + 1); ev.preventDefault(); }
  else if (ev.key === "+" || ev.key === "=") setZoom(S.zoom * 1.25);
  else if (ev.key === "-") setZoom(S.zoom / 1.25);
  else if (ev.key === "0") { S.zoom = 1; S.pan = [0, 0]; drawAll(); }
});

// ---- start ----------------------------------------------------------------------------------------------
function fitCanvases() {
  // two square panes side by side in the viewer's width
  const w = Math.max(260, Math.min(560, Math.floor(($("viewer").clientWidth - 44) / 2)));
  for (const id of ["t2", "t1"]) { const cv = $(id); if (cv.width !== w) { cv.width = w; cv.height = w; } }
  drawAll();
}

async function start() {
  try {
    S.health = await (await api("/api/health")).json();
  } catch (e) {
    status(e.status === 401 ? "this server needs a token: open the page as /#token=TOKEN" : e.message, "error");
    return;
  }
  $("synthetic").hidden = !S.health.synthetic;
  if (S.health.synthetic && S.health.cohort_synthetic === false) {
    // a real study read by a model trained on a synthetic phantom: the banner says which part is synthetic
    $("synthetic").textContent = "model trained on a synthetic cohort";
  }
  const m = S.health.model;
  $("model").textContent = m ? `model: ${m.backbone}, ${m.folds.length} fold models, threshold ${m.threshold}` +
    (m.optimistic ? " (optimistic run)" : "") : "no model loaded (start with --model RUN to predict)";
  buildForm();
  attachPane("t2"); attachPane("t1");
  $("search").addEventListener("input", renderCases);
  $("filter").addEventListener("change", renderCases);
  $("label").addEventListener("change", () => setDirty(true));
  $("slices").addEventListener("input", () => { setDirty(true); draw("t2"); });
  $("centre").addEventListener("click", setCentre);
  $("clear-box").addEventListener("click", () => { S.box = null; S.t1Box = null; $("box").textContent = "none: drag on the T2W image"; setDirty(true); drawAll(); });
  $("save").addEventListener("click", save);
  $("predict").addEventListener("click", predict);
  window.addEventListener("beforeunload", (ev) => { if (S.dirty) { ev.preventDefault(); ev.returnValue = ""; } });
  window.addEventListener("resize", fitCanvases);
  fitCanvases();
  await loadCases();
  status("pick a case on the left");
}
start();
