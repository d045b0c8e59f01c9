"use strict";
// The reader page of a spinedx reader study: plain JavaScript, no build step, nothing loaded from elsewhere.
// The token travels in the Authorization header only (never in a URL or a cookie) and is kept in this tab's
// sessionStorage. The server sends the due case and nothing else; this page only shows what it is sent. The images
// are shown by viewer.js, the viewer the workstation uses too (the same slice numbers, windows, keys and markers).

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "spinedx-reader-token";
const R = { token: null, me: null, doc: null, step: null, viewer: null, scoreSet: false, busy: false, armed: null };

// ---- requests -------------------------------------------------------------------------------------------------
async function api(path, opts = {}) { return apiFetch(path, opts, R.token); }
const post = (path, body) => api(path, body === undefined ? { method: "POST" } :
  { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function status(text, cls) { const s = $("status"); s.textContent = text; s.className = "status " + (cls || ""); }

function show(view) {
  for (const id of ["signin", "reading", "paused", "waiting", "done", "coordinator"]) $(id).hidden = id !== view;
  const signedIn = view !== "signin";
  $("signout").hidden = !signedIn;
  $("pause").hidden = view !== "reading";
}

// ---- signing in -------------------------------------------------------------------------------------------------
async function signIn(token) {
  R.token = token;
  try {
    R.me = await (await api("/reader/api/me")).json();
  } catch (e) {
    R.token = null; sessionStorage.removeItem(TOKEN_KEY);
    show("signin");
    status(e.status === 401 ? "this token is not one of the study's tokens" : e.message, "error");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("synthetic").hidden = !R.me.synthetic;
  $("who").textContent = R.me.role === "coordinator" ? "coordinator" : "reader " + R.me.name;
  if (R.me.role === "coordinator") { await loadProgress(); return; }
  buildFeatures(R.me.features);
  await loadNext();
}

function signOut() {
  if (R.step && !$("reading").hidden) pauseNow(true);
  sessionStorage.removeItem(TOKEN_KEY);
  R.token = null; R.me = null; R.step = null; R.doc = null;
  clearCase();
  $("who").textContent = "";
  show("signin");
  status("signed out");
}

// ---- the reader's next step -------------------------------------------------------------------------------------
function progressText(doc) {
  const sess = doc.sessions > 1 ? `session ${doc.session} of ${doc.sessions}: ` : "";
  return `${sess}${doc.done} of ${doc.total} reads done`;
}

async function loadNext() {
  status("loading the next case ...");
  let doc;
  try { doc = await (await api("/reader/api/next")).json(); } catch (e) { status(e.message, "error"); return; }
  R.doc = doc;
  if (doc.status === "paused") { clearCase(); show("paused"); status(progressText(doc) + "; paused"); return; }
  if (doc.status === "waiting") {
    clearCase(); show("waiting");
    $("waiting-text").textContent = `Session ${doc.session} opens on ${doc.available_at.replace("T", " ").replace("Z", " UTC")}` +
      " (the washout between your two sessions). Sign in again then.";
    status(progressText(doc)); return;
  }
  if (doc.status === "done") { clearCase(); show("done"); status(progressText(doc)); return; }
  showStep(doc);
}

function clearCase() {
  R.step = null;
  R.viewer.close();
  renderAided(null);
  $("own-unaided").hidden = true; $("own-unaided").textContent = "";
  $("case-number").textContent = ""; $("modality").textContent = "";
}

function showStep(doc) {
  const st = doc.step;
  const sameCase = R.step && R.step.case_id === st.case_id && R.viewer.doc;
  R.step = st;
  $("case-number").textContent = st.case_id;
  $("modality").textContent = st.modality === "aided" ? "aided read: the model's answer is shown" : "unaided read";
  $("modality").className = "modality " + st.modality;
  $("progress").textContent = progressText(doc) + ` · step ${st.step}`;
  renderAided(st.modality === "aided" ? st.aided : null);
  const own = st.your_unaided_read;
  $("own-unaided").hidden = !own;
  $("own-unaided").textContent = own ? `Your unaided read of this case (locked): ${own.call}, confidence ${own.score}` : "";
  resetForm();
  show("reading");
  fitCanvases();
  // the same case again (its aided step): the slice, window and zoom stay as the reader left them
  if (!sameCase) R.viewer.open(st);
  status(`case ${st.case_id}: ${st.modality} read`, "ok");
}

// The aided panel: the one place the model's answer is drawn (the server decides its content: aided_view).
function renderAided(a) {
  const box = $("aided");
  box.replaceChildren();
  box.hidden = !a;
  if (!a) return;
  const h = document.createElement("h2"); h.textContent = "The model's answer";
  const small = document.createElement("small"); small.textContent = " (research use only, not for clinical decisions)";
  h.append(small);
  const p = document.createElement("p"); p.className = "prob";
  p.append("p(malignant) = ");
  const b = document.createElement("b"); b.dataset.testid = "aided-probability"; b.setAttribute("data-testid", "aided-probability");
  b.textContent = a.probability.toFixed(3);
  // the decision as the workstation states it: refer in a neutral colour with its reasons, never red or green
  const decision = a.decision || a.call;
  const c = document.createElement("span"); c.className = "call-" + decision; c.dataset.testid = "aided-decision";
  c.setAttribute("data-testid", "aided-decision");
  c.textContent = ` → ${decision === "refer" ? "refer (indeterminate)" : decision}`;
  p.append(b, c, decision === "refer" ? ` (refer: ${a.refer_reasons_text || "no reason recorded"})`
    : ` (at the model's threshold ${a.threshold})`);
  box.append(h, p);
  if (a.synthetic_training) {
    const t = document.createElement("p"); t.className = "notes"; t.setAttribute("data-testid", "aided-trained-on");
    t.textContent = "Trained on a synthetic cohort: this answer describes a simulation, not real patients.";
    box.append(t);
  }
  if (a.explanation && a.overlays.length) {
    const n = document.createElement("p"); n.className = "notes";
    n.textContent = `Heatmaps: ${a.explanation.caption || a.explanation.method}.`;
    const legend = document.createElement("p"); legend.className = "notes"; legend.setAttribute("data-testid", "heat-caption");
    legend.textContent = heatLegend(a.explanation.method);
    box.append(n, colorBar(), legend);
  }
  const seq = R.step ? R.step.step : null;
  for (const o of [...a.overlays].sort((x, y) => x.slice_index - y.slice_index)) {
    // each figure in the slices' order, its image filled in when it arrives
    const fig = document.createElement("figure"), cap = document.createElement("figcaption");
    // numbered from 1, like the overlay images' titles (spinedx predict)
    cap.textContent = `T2 slice ${o.slice_index + 1}`;
    fig.append(cap); box.append(fig);
    api(o.url).then((r) => r.blob()).then((blob) => {
      if (!R.step || R.step.step !== seq) return;
      const img = document.createElement("img");
      img.alt = `${a.explanation ? a.explanation.method : "heatmap"} on T1W and T2W, slice ${o.slice_index + 1}`;
      img.src = URL.createObjectURL(blob);
      fig.append(img);
    }).catch((e) => status(e.message, "error"));
  }
}

// ---- the read form ----------------------------------------------------------------------------------------------
function buildFeatures(features) {
  const box = $("features");
  box.replaceChildren();
  $("features-box").hidden = !features.length;
  for (const f of features) {
    const lab = document.createElement("label"); lab.title = f.description;
    const span = document.createElement("span"); span.textContent = f.description;
    const sel = document.createElement("select"); sel.id = "f-" + f.name; sel.dataset.feature = f.name;
    for (const [v, t] of [["", "not scored"], ["0", "absent"], ["1", "present"]]) {
      const o = document.createElement("option"); o.value = v; o.textContent = t; sel.append(o);
    }
    sel.addEventListener("change", checkForm);
    lab.append(span, sel); box.append(lab);
  }
}

function resetForm() {
  for (const r of document.querySelectorAll("input[name=call]")) r.checked = false;
  $("score").value = ""; $("score-range").value = "50"; R.scoreSet = false;
  $("score-range").classList.add("unset");
  for (const s of $("features").querySelectorAll("select")) s.value = "";
  checkForm();
}

function formValue() {
  const call = (document.querySelector("input[name=call]:checked") || {}).value || null;
  const raw = $("score").value.trim();
  const score = R.scoreSet && /^\d{1,3}$/.test(raw) ? Number(raw) : null;
  const features = {};
  let unscored = 0;
  for (const s of $("features").querySelectorAll("select")) {
    if (s.value === "") unscored++; else features[s.dataset.feature] = Number(s.value);
  }
  return { call, score: score !== null && score <= 100 ? score : null, features, unscored };
}

function checkForm() {
  const v = formValue();
  const missing = [];
  if (!v.call) missing.push("your call");
  if (v.score === null) missing.push("your confidence (0-100)");
  if (v.unscored) missing.push(`${v.unscored} feature(s)`);
  $("submit").disabled = !R.step || missing.length > 0 || R.busy;
  let hint = missing.length ? "To submit, set " + missing.join(", ") + "." : "";
  if (!missing.length && ((v.call === "benign" && v.score > 50) || (v.call === "malignant" && v.score < 50))) {
    hint = `Note: you call it ${v.call} with a ${v.score}% probability of malignancy.`;
  }
  $("hint").textContent = hint;
}

async function submitRead() {
  if (!R.step || R.busy) return;
  const v = formValue();
  if (!v.call || v.score === null || v.unscored) { checkForm(); return; }
  const body = { step: R.step.step, call: v.call, score: v.score };
  if (R.me.features.length) body.features = v.features;
  R.busy = true; $("submit").disabled = true;
  status("saving your read ...");
  try {
    await post("/reader/api/reads", body);
    await loadNext(); // the aided step's model answer may take seconds the first time: the form stays locked
    R.busy = false; checkForm();
  } catch (e) {
    R.busy = false; checkForm();
    status("not saved: " + e.message, "error");
  }
}

// ---- pause --------------------------------------------------------------------------------------------------------
function pauseNow(leaving) {
  if (!R.token) return Promise.resolve();
  // keepalive: the request still goes out when the tab is being closed
  return fetch("/reader/api/pause", { method: "POST", keepalive: !!leaving, headers: { Authorization: "Bearer " + R.token } });
}

async function pauseClicked() {
  try { await pauseNow(false); } catch (e) { status(e.message, "error"); return; }
  clearCase(); show("paused");
  status("paused: the case is hidden and its clock stopped");
}

async function resumeClicked() {
  try { await post("/reader/api/resume"); } catch (e) { status(e.message, "error"); return; }
  await loadNext();
}

// ---- the coordinator ---------------------------------------------------------------------------------------------
async function loadProgress() {
  let p;
  try { p = await (await api("/reader/api/progress")).json(); } catch (e) { status(e.message, "error"); return; }
  show("coordinator");
  $("study-line").textContent = `${p.design} design, ${p.n_cases} cases, readers ${p.readers.join(", ")}` +
    (p.washout_days ? `, washout ${p.washout_days} days` : "") + ". Counts only: the reads of a session are shown once you close it.";
  const box = $("sessions"); box.replaceChildren();
  for (const s of p.sessions) {
    const div = document.createElement("div"); div.className = "session"; div.dataset.session = s.session;
    const h = document.createElement("h3");
    h.textContent = `Session ${s.session}: ` + (s.closed ? `closed ${s.closed_at.replace("T", " ").replace("Z", " UTC")}` : "open");
    const t = document.createElement("table"); t.dataset.testid = "progress-table"; t.setAttribute("data-testid", "progress-table");
    const head = document.createElement("tr");
    for (const c of ["reader", "read", "planned"]) { const th = document.createElement("th"); th.textContent = c; head.append(th); }
    t.append(head);
    for (const [name, c] of Object.entries(s.readers)) {
      const tr = document.createElement("tr"); tr.dataset.reader = name;
      for (const v of [name, String(c.read), String(c.planned)]) { const td = document.createElement("td"); td.textContent = v; tr.append(td); }
      t.append(tr);
    }
    div.append(h, t);
    if (!s.closed) {
      const b = document.createElement("button"); b.type = "button"; b.className = "close";
      b.setAttribute("data-testid", `close-session-${s.session}`);
      b.textContent = R.armed === s.session ? `Confirm: close session ${s.session} (no more reads in it)` : `Close session ${s.session}`;
      b.addEventListener("click", () => closeSession(s.session));
      div.append(b);
    } else {
      await showReads(div, s.session);
    }
    box.append(div);
  }
  status("progress at " + new Date().toLocaleTimeString());
}

async function closeSession(n) {
  if (R.armed !== n) { R.armed = n; await loadProgress(); return; } // a second click confirms
  R.armed = null;
  try { await post(`/reader/api/sessions/${n}/close`); } catch (e) { status(e.message, "error"); return; }
  await loadProgress();
}

async function showReads(div, n) {
  let reads;
  try { reads = await (await api(`/reader/api/sessions/${n}/reads`)).json(); } catch (e) { status(e.message, "error"); return; }
  const t = document.createElement("table"); t.className = "reads"; t.setAttribute("data-testid", `reads-${n}`);
  const cols = ["reader", "step", "case_id", "modality", "call", "score", "seconds"];
  const head = document.createElement("tr");
  for (const c of cols) { const th = document.createElement("th"); th.textContent = c; head.append(th); }
  t.append(head);
  for (const r of reads) {
    const tr = document.createElement("tr");
    for (const c of cols) { const td = document.createElement("td"); td.textContent = r[c] === null ? "" : String(r[c]); tr.append(td); }
    t.append(tr);
  }
  const p = document.createElement("p"); p.className = "notes";
  p.textContent = `${reads.length} reads. Export them for the analysis with: spinedx readers export STUDY --out DIR`;
  div.append(t, p);
}

// ---- the viewer: viewer.js, shared with the workstation (slices from 1, window/level in the browser, markers) -------
function caseSlice(which, k) {
  return api(`/reader/api/cases/${encodeURIComponent(R.step.case_id)}/${which}/${k}.raw`).then((r) => r.arrayBuffer());
}

document.addEventListener("keydown", (ev) => {
  if (!R.step || $("reading").hidden || Viewer.isFormControl(document.activeElement)) return;
  if (R.viewer.handleKey(ev)) ev.preventDefault();
});

// ---- start ------------------------------------------------------------------------------------------------------
function fitCanvases() {
  // two square panes side by side in the viewer's width, short enough to fit the window with their tools
  const top = $("t2").getBoundingClientRect().top + window.scrollY;
  const w = Math.max(240, Math.min(600, Math.floor(($("reading").clientWidth - 400) / 2), Math.floor(window.innerHeight - top - 64)));
  for (const id of ["t2", "t1"]) { const cv = $(id); if (cv.width !== w) { cv.width = w; cv.height = w; } }
  R.viewer.drawAll();
}

function start() {
  R.viewer = new Viewer({
    root: $("viewer-card"), panes: { t2: $("t2"), t1: $("t1") }, info: { t2: $("t2-info"), t1: $("t1-info") },
    foot: { t2: $("t2-wl"), t1: $("t1-wl") }, tools: { t2: $("t2-tools"), t1: $("t1-tools") },
    fetchSlice: caseSlice, onError: (msg) => status(msg, "error"),
  });
  R.viewer.guardControls($("answer-form"));
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (t) signIn(t);
  });
  $("signout").addEventListener("click", signOut);
  $("pause").addEventListener("click", pauseClicked);
  $("resume").addEventListener("click", resumeClicked);
  $("submit").addEventListener("click", submitRead);
  for (const r of document.querySelectorAll("input[name=call]")) r.addEventListener("change", checkForm);
  $("score").addEventListener("input", () => {
    R.scoreSet = $("score").value.trim() !== "";
    if (R.scoreSet) { $("score-range").value = $("score").value; $("score-range").classList.remove("unset"); }
    checkForm();
  });
  $("score-range").addEventListener("input", () => {
    R.scoreSet = true; $("score").value = $("score-range").value; $("score-range").classList.remove("unset"); checkForm();
  });
  // leaving the page (closing the tab, reloading) pauses the case being read: its clock stops until resumed
  window.addEventListener("resize", () => { if (!$("reading").hidden) fitCanvases(); });
  window.addEventListener("pagehide", () => { if (R.step && R.me && R.me.role === "reader") pauseNow(true); });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved); else { show("signin"); status("sign in with your token"); }
}
start();
