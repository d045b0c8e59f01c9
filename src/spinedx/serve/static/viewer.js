"use strict";
// The image viewer shared by the workstation (app.js) and the reader-study page (reader.js): plain JavaScript, no
// build step. Both pages get the same reading conventions from here:
//
// * Pixels at full depth. Each slice is fetched once as unsigned 16-bit pixels (value = intercept + slope * u, the
//   series' "pixels" in the case document) and windowed here on a canvas: dragging the window/level, a preset or
//   invert draws again from the pixels already in the browser, without a request. The window is DICOM's linear
//   function (PS3.3 C.11.2.1.2), the same as the server's PNGs: (value - (centre - width / 2)) * 255 / width.
// * Slice numbers are shown from 1 ("7/12"); the manifest and the API number them from 0 (slice 7/12 is index 6).
// * Orientation markers at the edges come from the series' geometry (the server's "orientation" letters).
// * Keys act on the viewer when the focus is not in a form control (input, select, textarea); a form control
//   keeps its own keys (arrows over a focused drop-down change the drop-down, never the slice). Pressing on the
//   images gives the viewer the focus, and a choice made with the mouse in a drop-down or radio button hands the
//   focus back to the viewer (Viewer.guardControls), so arrows meant for the images never change a form value.
//
// Keys: Up/Left previous slice, Down/Right next, PgUp/PgDn 5 slices, Home/End first/last slice; + / - zoom, 0
// resets the view; 1 / 2 / 3 window presets auto / T1 / T2 and I invert, on the active pane (the last one the
// pointer was over). Mouse: wheel scrolls slices, Ctrl+wheel zooms, right-drag or Shift+drag sets window/level
// (left-drag too where the page has no drawing tool), middle-drag pans.

const PAGE_STEP = 5;

class Viewer {
  // opts: { root: the element that takes the viewer's focus; panes: {t2, t1}: canvases; info, foot, tools: {t2, t1}
  //   elements for the slice line, the window line and the preset buttons; fetchSlice(which, k) -> Promise of an
  //   ArrayBuffer; overlay(which, ctx, geom) draws the page's marks; infoExtra(which) -> text after the slice
  //   number; tool: {down(img, ev), move(img, ev), up(img, ev)} for a left-button drag on the T2 pane (the
  //   workstation's box); onSlice(k) after the T2 slice changed; onError(message) }
  constructor(opts) {
    this.opts = opts;
    this.doc = null;
    this.k = 0; this.t1k = 0; this.t1Map = null;
    this.zoom = 1; this.pan = [0, 0];
    this.wl = { t2: null, t1: null }; this.preset = { t2: "auto", t1: "auto" }; this.invert = { t2: false, t1: false };
    this.cache = new Map();          // "t2/6" -> Uint16Array (the pixels of slice 6 of T2)
    this.pending = new Map();        // "t2/6" -> Promise
    this.rendered = { t2: null, t1: null }; // {key, sig, canvas}: the windowed slice, drawn again only when it changes
    this.gen = 0;                    // bumped on open/close: answers for an earlier case are dropped
    this.active = "t2";
    this.drag = null;
    this.requests = 0;               // slice requests sent (the tests count them)
    for (const which of ["t2", "t1"]) this._attach(which);
    this._buildTools();
  }

  // ---- the case --------------------------------------------------------------------------------------------
  open(doc, k) {
    this.gen++;
    this.doc = doc; this.cache.clear(); this.pending.clear(); this.rendered = { t2: null, t1: null };
    this.zoom = 1; this.pan = [0, 0]; this.t1Map = null;
    for (const which of ["t2", "t1"]) { this.invert[which] = false; this._applyPreset(which, "auto"); }
    this.k = -1;
    this.setSlice(k === undefined ? Math.floor(doc.t2.slices / 2) : k);
    this._syncTools();
  }

  close() {
    this.gen++;
    this.doc = null; this.cache.clear(); this.pending.clear(); this.rendered = { t2: null, t1: null };
    this.drawAll(); this._syncTools();
  }

  // The T2 -> T1 slice correspondence (t1_slice_for_t2), e.g. again after a box was mapped or registered.
  setT1Map(map) { if (this.doc) { this.doc.t1_slice_for_t2 = map; this.setT1Slice(map[this.k]); } }

  setSlice(k) {
    if (!this.doc) return;
    const n = this.doc.t2.slices;
    k = Math.max(0, Math.min(n - 1, k));
    if (k === this.k) return;
    this.k = k;
    this.t1k = this.doc.t1_slice_for_t2[k];
    this._load("t2", this.k); this._load("t1", this.t1k);
    this.drawAll();
    if (this.opts.onSlice) this.opts.onSlice(k);
  }

  setT1Slice(k) {
    if (!this.doc) return;
    k = Math.max(0, Math.min(this.doc.t1.slices - 1, k));
    this.t1k = k; this._load("t1", k); this.draw("t1");
  }

  has(which, k) { return this.cache.has(`${which}/${k}`); }
  ready() { return !!this.doc && this.has("t2", this.k) && this.has("t1", this.t1k); }

  _load(which, k) {
    const key = `${which}/${k}`;
    if (this.cache.has(key) || this.pending.has(key)) return;
    const gen = this.gen, d = this.doc[which];
    this.requests++;
    const p = this.opts.fetchSlice(which, k).then((buf) => {
      if (gen !== this.gen) return;
      if (buf.byteLength !== d.rows * d.columns * 2) throw new Error(`slice ${k + 1}: ${buf.byteLength} bytes, not ${d.rows} x ${d.columns} x 2`);
      this.cache.set(key, littleEndian16(buf));
      if (this.cache.size > 400) this.cache.delete(this.cache.keys().next().value);
      this.draw(which);
    }).catch((e) => { if (gen === this.gen && this.opts.onError) this.opts.onError(e.message); })
      .finally(() => { if (gen === this.gen) this.pending.delete(key); });
    this.pending.set(key, p);
  }

  // ---- window / level ----------------------------------------------------------------------------------------
  presets(which) { return this.doc ? this.doc[which].presets : []; }

  _applyPreset(which, name) {
    const p = this.presets(which).find((q) => q.name === name) || this.doc[which].window;
    this.wl[which] = { c: p.center, w: p.width };
    this.preset[which] = p.name || name;
  }

  applyPreset(which, name) { if (!this.doc) return; this._applyPreset(which, name); this.draw(which); this._syncTools(); }
  toggleInvert(which) { if (!this.doc) return; this.invert[which] = !this.invert[which]; this.draw(which); this._syncTools(); }
  setWindow(which, c, w) {
    if (!this.doc) return;
    this.wl[which] = { c, w: Math.max(1e-6, w) }; this.preset[which] = null; this.draw(which); this._syncTools();
  }

  // The windowed slice as a canvas of the image's size (drawn again only when the slice or the window changed).
  _windowed(which) {
    const k = which === "t2" ? this.k : this.t1k, key = `${which}/${k}`, u = this.cache.get(key);
    if (!u) return null;
    const wl = this.wl[which], inv = this.invert[which], sig = `${key}|${wl.c}|${wl.w}|${inv}`;
    const r = this.rendered[which];
    if (r && r.sig === sig) return r.canvas;
    const d = this.doc[which];
    const canvas = (r && r.canvas) || document.createElement("canvas");
    if (canvas.width !== d.columns || canvas.height !== d.rows) { canvas.width = d.columns; canvas.height = d.rows; }
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(d.columns, d.rows);
    windowPixels(u, d.pixels.slope, d.pixels.intercept, wl.c, wl.w, inv, new Uint32Array(img.data.buffer));
    ctx.putImageData(img, 0, 0);
    this.rendered[which] = { sig, canvas };
    return canvas;
  }

  // ---- geometry: image pixel (x, y) <-> canvas, physical aspect from the pixel spacing, zoom and pan shared --------
  geom(which) {
    const d = this.doc[which], cv = this.opts.panes[which];
    const sx = d.spacing_mm.column, sy = d.spacing_mm.row;
    const wmm = d.columns * sx, hmm = d.rows * sy;
    const base = Math.min(cv.width / wmm, cv.height / hmm) * this.zoom;
    return { ax: base * sx, ay: base * sy, ox: (cv.width - wmm * base) / 2 + this.pan[0], oy: (cv.height - hmm * base) / 2 + this.pan[1] };
  }
  static toCanvas(g, x, y) { return [g.ox + x * g.ax, g.oy + y * g.ay]; }
  static toImage(g, cx, cy) { return [(cx - g.ox) / g.ax, (cy - g.oy) / g.ay]; }
  canvasXY(which, ev) {
    const cv = this.opts.panes[which], r = cv.getBoundingClientRect();
    return [(ev.clientX - r.left) * (cv.width / r.width), (ev.clientY - r.top) * (cv.height / r.height)];
  }
  imageXY(which, ev) { const [cx, cy] = this.canvasXY(which, ev); return Viewer.toImage(this.geom(which), cx, cy); }

  setZoom(z) { this.zoom = Math.max(0.5, Math.min(8, z)); this.drawAll(); }
  resetView() { this.zoom = 1; this.pan = [0, 0]; this.drawAll(); }

  // ---- drawing ------------------------------------------------------------------------------------------------
  drawAll() { this.draw("t2"); this.draw("t1"); }

  draw(which) {
    const cv = this.opts.panes[which], ctx = cv.getContext("2d");
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height);
    const info = this.opts.info[which], foot = this.opts.foot[which];
    if (!this.doc) { info.textContent = ""; foot.textContent = ""; return; }
    const d = this.doc[which], g = this.geom(which), img = this._windowed(which);
    if (img) { ctx.imageSmoothingEnabled = this.zoom < 2; ctx.drawImage(img, g.ox, g.oy, d.columns * g.ax, d.rows * g.ay); }
    if (this.opts.overlay) this.opts.overlay(which, ctx, g);
    this._markers(ctx, cv, d.orientation);
    const k = which === "t2" ? this.k : this.t1k;
    const o = d.orientation || {};
    info.textContent = `slice ${k + 1}/${d.slices}` + (img ? "" : " (loading)") + (this.opts.infoExtra ? this.opts.infoExtra(which) : "");
    info.title = `Slices are numbered from 1 as shown here (slice ${k + 1} is index ${k} in the manifest and the API, ` +
      `which count from 0); slice 1 lies towards ${sideName(o.first_slice)}, slice ${d.slices} towards ${sideName(o.last_slice)}.`;
    const wl = this.wl[which];
    foot.textContent = `W ${fmt(wl.w)} / L ${fmt(wl.c)}` + (this.preset[which] ? ` (${this.preset[which]})` : "") +
      (this.invert[which] ? " · inverted" : "") + ` · zoom ${this.zoom.toFixed(2)}x` +
      (o.first_slice ? ` · slices ${o.first_slice}→${o.last_slice}` : "");
  }

  _markers(ctx, cv, o) {
    if (!o) return;
    ctx.save();
    ctx.font = "bold 15px system-ui, sans-serif"; ctx.fillStyle = "#ffd21f";
    ctx.shadowColor = "#000"; ctx.shadowBlur = 3;
    const m = 6;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left"; ctx.fillText(o.left, m, cv.height / 2);
    ctx.textAlign = "right"; ctx.fillText(o.right, cv.width - m, cv.height / 2);
    ctx.textAlign = "center";
    ctx.textBaseline = "top"; ctx.fillText(o.top, cv.width / 2, m);
    ctx.textBaseline = "bottom"; ctx.fillText(o.bottom, cv.width / 2, cv.height - m);
    ctx.restore();
  }

  // ---- preset buttons ------------------------------------------------------------------------------------------
  _buildTools() {
    if (!this.opts.tools) return;
    for (const which of ["t2", "t1"]) {
      const box = this.opts.tools[which];
      if (!box) continue;
      box.replaceChildren();
      for (const [name, key] of [["auto", "1"], ["T1", "2"], ["T2", "3"]]) {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = name; b.dataset.preset = name;
        b.setAttribute("data-testid", `${which}-preset-${name}`);
        b.title = `window preset ${name} (key ${key} over this pane): ` + presetHelp(name);
        b.addEventListener("click", () => { this.active = which; this.applyPreset(which, name); });
        box.append(b);
      }
      const inv = document.createElement("button");
      inv.type = "button"; inv.textContent = "invert"; inv.setAttribute("data-testid", `${which}-invert`);
      inv.title = "invert the grey scale (key I over this pane)";
      inv.addEventListener("click", () => { this.active = which; this.toggleInvert(which); });
      box.append(inv);
    }
    this._syncTools();
  }

  _syncTools() {
    if (!this.opts.tools) return;
    for (const which of ["t2", "t1"]) {
      const box = this.opts.tools[which];
      if (!box) continue;
      for (const b of box.querySelectorAll("button")) {
        b.disabled = !this.doc;
        const on = b.dataset.preset ? this.preset[which] === b.dataset.preset : this.invert[which];
        b.classList.toggle("on", !!this.doc && on);
        b.setAttribute("aria-pressed", String(!!this.doc && on));
      }
    }
  }

  // ---- pointer --------------------------------------------------------------------------------------------------
  _attach(which) {
    const cv = this.opts.panes[which];
    cv.addEventListener("contextmenu", (ev) => ev.preventDefault());
    cv.addEventListener("pointerenter", () => { this.active = which; });
    cv.addEventListener("pointerdown", (ev) => {
      if (!this.doc) return;
      this.active = which;
      this.focus();
      ev.preventDefault();
      cv.setPointerCapture(ev.pointerId);
      const [cx, cy] = this.canvasXY(which, ev);
      const tool = which === "t2" ? this.opts.tool : null;
      if (ev.button === 1) this.drag = { mode: "pan", sx: cx, sy: cy, pan: this.pan.slice() };
      else if (ev.button === 2 || ev.shiftKey || (ev.button === 0 && !tool)) {
        this.drag = { mode: "wl", which, sx: cx, sy: cy, wl: Object.assign({}, this.wl[which]) };
      } else if (ev.button === 0 && tool) {
        this.drag = { mode: "tool" };
        tool.down(this.imageXY(which, ev), ev);
      }
    });
    cv.addEventListener("pointermove", (ev) => {
      const d = this.drag;
      if (!d || !this.doc) return;
      const [cx, cy] = this.canvasXY(which, ev);
      if (d.mode === "pan") { this.pan = [d.pan[0] + cx - d.sx, d.pan[1] + cy - d.sy]; this.drawAll(); }
      else if (d.mode === "wl") {
        // drag right: wider window; drag down: higher level; 400 canvas pixels move it by the auto window's width
        const span = this.doc[d.which].window.width;
        this.setWindow(d.which, d.wl.c + (cy - d.sy) * span / 400, Math.max(1, d.wl.w + (cx - d.sx) * span / 400));
      } else if (d.mode === "tool") this.opts.tool.move(this.imageXY(which, ev), ev);
    });
    const end = (ev) => {
      const d = this.drag;
      this.drag = null;
      if (d && d.mode === "tool" && this.doc) this.opts.tool.up(this.imageXY(which, ev), ev);
    };
    cv.addEventListener("pointerup", end);
    cv.addEventListener("pointercancel", end);
    cv.addEventListener("wheel", (ev) => {
      if (!this.doc) return;
      ev.preventDefault();
      this.active = which;
      if (ev.ctrlKey) { this.setZoom(this.zoom * (ev.deltaY < 0 ? 1.15 : 1 / 1.15)); return; }
      this.focus();
      this.setSlice(this.k + (ev.deltaY > 0 ? 1 : -1));
    }, { passive: false });
  }

  focus() {
    const root = this.opts.root;
    if (root && document.activeElement !== root) root.focus({ preventScroll: true });
  }

  // ---- keys -----------------------------------------------------------------------------------------------------
  // The viewer's keys (see the top of this file); true when the key was the viewer's. The page calls it only when
  // the focus is not in a form control (Viewer.isFormControl).
  handleKey(ev) {
    if (!this.doc || ev.altKey || ev.metaKey || ev.ctrlKey) return false;
    const n = this.doc.t2.slices;
    const step = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -PAGE_STEP, PageDown: PAGE_STEP }[ev.key];
    if (step !== undefined) { this.setSlice(this.k + step); return true; }
    if (ev.key === "Home") { this.setSlice(0); return true; }
    if (ev.key === "End") { this.setSlice(n - 1); return true; }
    if (ev.key === "+" || ev.key === "=") { this.setZoom(this.zoom * 1.25); return true; }
    if (ev.key === "-") { this.setZoom(this.zoom / 1.25); return true; }
    if (ev.key === "0") { this.resetView(); return true; }
    const preset = { 1: "auto", 2: "T1", 3: "T2" }[ev.key];
    if (preset) { this.applyPreset(this.active, preset); return true; }
    if (ev.key === "i" || ev.key === "I") { this.toggleInvert(this.active); return true; }
    return false;
  }

  static isFormControl(el) {
    return !!el && (el.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(el.tagName));
  }

  // A choice made with the pointer in a drop-down, radio button, checkbox or slider inside `container` hands the focus back
  // to the viewer, so the next arrow key scrolls the images instead of silently changing that choice. A choice made
  // with the keyboard keeps the focus where it is (the keyboard user moves on with Tab).
  guardControls(container) {
    let pointer = null;
    container.addEventListener("pointerdown", (ev) => { pointer = ev.target; }, true);
    container.addEventListener("keydown", () => { pointer = null; }, true);
    container.addEventListener("change", (ev) => {
      const t = ev.target;
      if (pointer && (t.tagName === "SELECT" || (t.tagName === "INPUT" && ["radio", "checkbox", "range"].includes(t.type)))
          && (pointer === t || t.contains(pointer) || (t.labels && [...t.labels].some((l) => l.contains(pointer))))) {
        pointer = null;
        this.focus();
      }
    }, true);
  }
}

// ---- helpers --------------------------------------------------------------------------------------------------------
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function littleEndian16(buf) {
  const u = new Uint16Array(buf);
  if (!LITTLE_ENDIAN) for (let i = 0; i < u.length; i++) u[i] = ((u[i] & 0xff) << 8) | (u[i] >> 8);
  return u;
}

// u: Uint16Array of pixels; out: Uint32Array over RGBA bytes. One lookup table per window: 65536 entries at most.
function windowPixels(u, slope, intercept, c, w, invert, out) {
  let max = 0;
  for (let i = 0; i < u.length; i++) if (u[i] > max) max = u[i];
  const lut = new Uint32Array(max + 1), lo = c - w / 2, scale = 255 / w;
  for (let v = 0; v <= max; v++) {
    let g = Math.floor(Math.min(255, Math.max(0, (intercept + slope * v - lo) * scale)));
    if (invert) g = 255 - g;
    lut[v] = (0xff000000 | (g << 16) | (g << 8) | g) >>> 0; // RGBA bytes on a little-endian machine
  }
  if (!LITTLE_ENDIAN) for (let v = 0; v <= max; v++) { const g = lut[v] & 0xff; lut[v] = ((g << 24) | (g << 16) | (g << 8) | 0xff) >>> 0; }
  for (let i = 0; i < u.length; i++) out[i] = lut[u[i]];
}

function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toPrecision(3); }

function sideName(letters) {
  const names = { L: "the patient's left", R: "the patient's right", A: "anterior", P: "posterior", H: "the head", F: "the feet" };
  return letters ? (names[letters[0]] || letters) + (letters.length > 1 ? ` (${letters})` : "") : "?";
}

function presetHelp(name) {
  return { auto: "the 1st-99.5th percentile of the series", T1: "marrow: the 5th-99th percentile of the foreground",
           T2: "fluid: the 5th-99.9th percentile of the foreground, fluid below saturation" }[name] || "";
}

// What the heatmap colours mean, for the method that made them (docs/explanations.md): said once, for both pages.
// `method` is the method's name or label (e.g. "layercam-layer3", "LayerCAM layer3", "occlusion").
function heatLegend(method) {
  if (/^occlusion/i.test(method || "")) {
    return "Colour: how much hiding that region of the patch lowers the malignant score, scaled to 0-1 for this case " +
      "(1: this case's largest drop). Not a probability, and not a map of the lesion.";
  }
  return "Colour: where the model's evidence for 'malignant' lies in this patch (its activations weighted by their " +
    "gradients), each fold model's map scaled to 0-1 for this case and then averaged: 1 is this case's strongest " +
    "evidence, not a fixed amount; near 0 the overlay is transparent. It is not a measure of how much a region " +
    "changes the score, not a probability, and not a map of the lesion.";
}

// The colour bar of the overlays (matplotlib's "jet", 0 to 1) with its ticks, as elements.
function colorBar() {
  const box = document.createElement("div"); box.className = "heat-legend";
  const bar = document.createElement("div"); bar.className = "colorbar"; bar.setAttribute("data-testid", "colorbar");
  const ticks = document.createElement("div"); ticks.className = "ticks";
  for (const t of ["0", "0.5", "1"]) { const s = document.createElement("span"); s.textContent = t; ticks.append(s); }
  box.append(bar, ticks);
  return box;
}

// Box size in pixels and millimetres (from the pixel spacing), e.g. "71 x 71 px = 49.7 x 49.7 mm".
function boxSize(box, spacing) {
  const w = box[2] - box[0], h = box[3] - box[1];
  return `${w} × ${h} px = ${(w * spacing.column).toFixed(1)} × ${(h * spacing.row).toFixed(1)} mm`;
}

// A request to the server with the signed-in token in the Authorization header (never a cookie or the URL); a
// refusal becomes an Error carrying the server's one-line detail and the HTTP status. Used by both pages' api().
async function apiFetch(path, opts = {}, token = null) {
  const headers = Object.assign({}, opts.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
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
