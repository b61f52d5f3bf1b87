// TrajectoryEditor: the TrajectoryCanvas drawing surface. Plain DOM, no ComfyUI imports, so it mounts in
// any page (tests/js/editor_page.html) as well as inside a ComfyUI DOM widget (tora_canvas.js).
//
// Its value is trajectory JSON v1 (docs/trajectory_json.md, checked by trajectory_geometry.js): tracks of
// points in width x height canvas pixels, whatever the on-screen size.
// A stored value that cannot be read opens an empty editor with a warning and is handed back unchanged
// until the user edits.

import { buildPanel } from "./trajectory_panel.js";
import { drawEditor } from "./trajectory_draw.js";
import {
  TRAJECTORY_VERSION,
  exportOfficialTxt,
  hitCurve,
  hitPoint,
  normaliseTrajectory,
  parseOfficialTxt,
  parseTrajectory,
  serializeTrajectory,
  trackPositions,
} from "./trajectory_geometry.js";

const PALETTE = ["#ff5a5a", "#4dc3ff", "#ffd24d", "#6cf06c", "#d17dff", "#ff9a3c", "#3cffd8", "#ff6ad5"];
const HIT_RADIUS = 8; // CSS px
const PLAY_FPS = 8; // Tora's output frame rate
const UNDO_LIMIT = 200;
const round2 = (v) => Math.round(v * 100) / 100;

export class TrajectoryEditor {
  /** @param {HTMLElement} container  @param {{width?, height?, frames?, onChange?: (text: string) => void}} options */
  constructor(container, { width = 720, height = 480, frames = 49, onChange = () => {} } = {}) {
    this.onChange = onChange;
    this.frames = frames;
    this.traj = { version: TRAJECTORY_VERSION, width, height, tracks: [] };
    this.raw = "";
    this.edited = false;
    this.warning = "";
    this.selected = -1;
    this.selectedPoint = -1;
    this.frame = 0;
    this.undoStack = [];
    this.redoStack = [];
    this.background = null;
    this.drag = null;
    this.ui = buildPanel(this);
    container.appendChild(this.ui.root);
    this.canvas = this.ui.canvas;
    this.bindCanvas();
    this.resizeObserver = new ResizeObserver(() => this.layout());
    this.resizeObserver.observe(this.ui.stage);
    this.refresh();
  }

  // ------------------------------------------------------------ value in / out

  /** The widget value: the stored text as given until the first edit, then the editor's JSON. */
  getValue() {
    return this.edited ? serializeTrajectory(this.traj) : this.raw;
  }

  /** Load a stored value; `size` ({width, height}) is the canvas of an empty or unreadable value. */
  setValue(text, size = null) {
    this.raw = typeof text === "string" ? text : "";
    this.edited = false;
    this.undoStack = [];
    this.redoStack = [];
    this.warning = "";
    const { width, height } = size ?? this.traj;
    try {
      this.traj = this.raw.trim() === "" ? { version: TRAJECTORY_VERSION, width, height, tracks: [] } : parseTrajectory(this.raw, { draft: true });
    } catch (err) {
      this.traj = { version: TRAJECTORY_VERSION, width, height, tracks: [] };
      this.warning = `Stored trajectory not loaded: ${err.message}. The editor starts empty; the stored text is kept unchanged until you edit.`;
    }
    this.selected = this.traj.tracks.length ? 0 : -1;
    this.selectedPoint = -1;
    this.refresh();
  }

  setFrames(frames) {
    this.frames = frames;
    this.frame = Math.min(this.frame, frames - 1);
    this.refresh();
  }

  /** Change the canvas size; points are rescaled so they keep their place in the picture. */
  setCanvasSize(width, height) {
    if (width === this.traj.width && height === this.traj.height) return;
    if (!this.traj.tracks.length) {
      Object.assign(this.traj, { width, height }); // nothing to rescale: not an edit of the stored value
      this.refresh();
      return;
    }
    this.edit(() => {
      const sx = width / this.traj.width;
      const sy = height / this.traj.height;
      for (const t of this.traj.tracks) t.points = t.points.map(([x, y]) => [round2(x * sx), round2(y * sy)]);
      Object.assign(this.traj, { width, height });
    });
  }

  /** Background picture (URL or null); drawn stretched to the canvas, it never changes coordinates. */
  setBackground(url) {
    this.backgroundUrl = url || null;
    this.ui.root.dataset.background = "";
    if (!url) {
      this.background = null;
      this.refresh();
      return;
    }
    const img = new Image();
    img.onload = () => {
      if (this.backgroundUrl !== url) return; // a newer background was asked for meanwhile
      this.background = img;
      this.ui.root.dataset.background = url;
      this.refresh();
    };
    img.onerror = () => this.backgroundUrl === url && this.status("background image could not be loaded", true);
    img.src = url;
  }

  destroy() {
    this.pause();
    this.resizeObserver.disconnect();
    this.ui.root.remove();
  }

  // ------------------------------------------------------------ edits and history

  snapshot() {
    return { text: serializeTrajectory(this.traj), selected: this.selected };
  }

  restore(snap) {
    this.traj = parseTrajectory(snap.text, { draft: true });
    this.selected = Math.min(snap.selected, this.traj.tracks.length - 1);
    this.selectedPoint = -1;
  }

  /** Apply `fn` as one undoable edit. */
  edit(fn) {
    this.pushUndo(this.snapshot());
    fn();
    this.changed();
  }

  pushUndo(snap) {
    this.undoStack.push(snap);
    if (this.undoStack.length > UNDO_LIMIT) this.undoStack.shift();
    this.redoStack = [];
  }

  changed() {
    this.edited = true;
    this.warning = "";
    this.status("");
    this.refresh();
    this.onChange(this.getValue());
  }

  undo() {
    if (!this.undoStack.length) return;
    this.redoStack.push(this.snapshot());
    this.restore(this.undoStack.pop());
    this.changed();
  }

  redo() {
    if (!this.redoStack.length) return;
    this.undoStack.push(this.snapshot());
    this.restore(this.redoStack.pop());
    this.changed();
  }

  // ------------------------------------------------------------ track operations

  get track() {
    return this.traj.tracks[this.selected] ?? null;
  }

  /** A new track object with a free palette colour (not yet added). */
  makeTrack(kind, points) {
    const used = new Set(this.traj.tracks.map((t) => t.color));
    const color = PALETTE.find((c) => !used.has(c)) ?? PALETTE[this.traj.tracks.length % PALETTE.length];
    return {
      kind, points, interpolation: "smooth", start_frame: 0, end_frame: null, easing: "linear",
      name: `Track ${this.traj.tracks.length + 1}`, color,
    };
  }

  /** Add and select a track: a "path" with the given first point (or none), or a "hold" point. */
  newTrack(kind, point = null, fields = {}) {
    const center = [this.traj.width / 2, this.traj.height / 2].map(round2);
    const points = point ? [point] : kind === "hold" ? [center] : [];
    this.edit(() => {
      this.traj.tracks.push({ ...this.makeTrack(kind, points), ...fields });
      this.selected = this.traj.tracks.length - 1;
      this.selectedPoint = this.track.points.length - 1;
    });
  }

  deleteTrack() {
    if (!this.track) return;
    this.edit(() => {
      this.traj.tracks.splice(this.selected, 1);
      this.selected = Math.min(this.selected, this.traj.tracks.length - 1);
      this.selectedPoint = -1;
    });
  }

  deletePoint(trackIndex, pointIndex) {
    const t = this.traj.tracks[trackIndex];
    if (!t || !t.points[pointIndex]) return;
    if (t.kind === "hold") {
      this.selected = trackIndex;
      this.deleteTrack();
      return;
    }
    this.edit(() => {
      t.points.splice(pointIndex, 1);
      this.selected = trackIndex;
      this.selectedPoint = -1;
    });
  }

  /** Set timing/interpolation fields of the selected track; returns an error message or "". */
  setTrackField(field, value) {
    const t = this.track;
    if (!t) return "select a track first";
    const next = { ...t, [field]: value };
    try {
      const [checked] = normaliseTrajectory({ ...this.traj, tracks: [next] }, { draft: true }).tracks;
      trackPositions(checked, this.frames, this.traj.width, this.traj.height);
    } catch (err) {
      return err.message.replace(/^track 0, /, "");
    }
    if (t[field] !== value) this.edit(() => (t[field] = value));
    return "";
  }

  // ------------------------------------------------------------ import / export

  importText(name, text) {
    try {
      if (/\.txt$/i.test(name)) {
        const t = parseOfficialTxt(text, this.traj.width, this.traj.height);
        this.newTrack(t.kind, null, t);
      } else {
        const imported = parseTrajectory(text);
        const sx = this.traj.width / imported.width;
        const sy = this.traj.height / imported.height;
        this.edit(() => {
          for (const t of imported.tracks) t.points = t.points.map(([x, y]) => [round2(x * sx), round2(y * sy)]);
          this.traj.tracks = imported.tracks;
          this.selected = imported.tracks.length ? 0 : -1;
        });
      }
      this.status(`imported ${name}`);
    } catch (err) {
      this.status(`import of ${name} failed: ${err.message}`, true);
    }
  }

  exportJson() {
    return serializeTrajectory(this.traj);
  }

  /** Official .txt of the selected track (per-frame positions on the 256 canvas) or null with a status. */
  exportTxt() {
    const t = this.track;
    if (!t || (t.kind === "path" && t.points.length < 2)) {
      this.status("select a finished track (a path needs 2 points) to export .txt", true);
      return null;
    }
    try {
      const { text, edgeClamped } = exportOfficialTxt(t, this.frames, this.traj.width, this.traj.height);
      this.status(edgeClamped ? `${edgeClamped} value(s) on the far canvas edge written as 255 (official range 0..255)` : "exported .txt");
      return text;
    } catch (err) {
      this.status(err.message, true);
      return null;
    }
  }

  // ------------------------------------------------------------ playback

  setFrame(f) {
    this.frame = Math.max(0, Math.min(this.frames - 1, f));
    this.refresh();
  }

  play() {
    if (this.timer) return;
    this.ui.play.textContent = "❚❚";
    this.timer = setInterval(() => this.setFrame((this.frame + 1) % this.frames), 1000 / PLAY_FPS);
  }

  pause() {
    clearInterval(this.timer);
    this.timer = null;
    this.ui.play.textContent = "▶";
  }

  // ------------------------------------------------------------ mouse and keyboard

  /** Pointer event -> trajectory-canvas pixels (independent of node zoom and CSS size). */
  toCanvas(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = ((e.clientX - r.left) / r.width) * this.traj.width;
    const y = ((e.clientY - r.top) / r.height) * this.traj.height;
    return [round2(Math.max(0, Math.min(this.traj.width, x))), round2(Math.max(0, Math.min(this.traj.height, y)))];
  }

  /** Canvas pixels per CSS pixel. */
  get px() {
    return this.traj.width / (this.canvas.getBoundingClientRect().width || this.traj.width);
  }

  /** What is under p: {track, point} or {track, segment} or null; the selected track wins. */
  pick(p) {
    const r = HIT_RADIUS * this.px;
    const order = this.traj.tracks.map((_, i) => i).filter((i) => i !== this.selected);
    if (this.track) order.unshift(this.selected);
    for (const i of order) {
      const point = hitPoint(this.traj.tracks[i].points, p, r);
      if (point >= 0) return { track: i, point };
    }
    for (const i of order) {
      const t = this.traj.tracks[i];
      const h = t.kind === "path" ? hitCurve(t.points, t.interpolation, this.traj.width, this.traj.height, p, r) : null;
      if (h) return { track: i, segment: h.segment };
    }
    return null;
  }

  onPointerDown(e) {
    e.stopPropagation();
    e.preventDefault(); // no mousedown focus change: keyboard focus goes to the key sink
    this.ui.keys.focus({ preventScroll: true });
    const p = this.toCanvas(e);
    const hit = this.pick(p);
    if (e.button === 2) {
      if (hit && "point" in hit) this.deletePoint(hit.track, hit.point);
      return;
    }
    if (e.button !== 0) return;
    if (hit && hit.track !== this.selected) {
      this.selected = hit.track;
      this.selectedPoint = "point" in hit ? hit.point : -1;
      this.refresh();
      if (!("point" in hit)) return;
    }
    const before = this.snapshot();
    if (hit && "point" in hit) {
      this.selectedPoint = hit.point;
    } else if (hit) {
      this.track.points.splice(hit.segment + 1, 0, p);
      this.selectedPoint = hit.segment + 1;
    } else if (this.track?.kind === "path") {
      this.track.points.push(p);
      this.selectedPoint = this.track.points.length - 1;
    } else {
      this.newTrack("path", p);
      return;
    }
    const added = !(hit && "point" in hit);
    this.drag = { before, moved: added, pointerId: e.pointerId };
    this.canvas.setPointerCapture?.(e.pointerId);
    if (added) this.refresh();
  }

  onPointerMove(e) {
    if (!this.drag) {
      this.canvas.style.cursor = this.pick(this.toCanvas(e)) ? "pointer" : "crosshair";
      return;
    }
    e.stopPropagation();
    this.track.points[this.selectedPoint] = this.toCanvas(e);
    this.drag.moved = true;
    this.refresh();
  }

  onPointerUp(e) {
    if (!this.drag) return;
    e.stopPropagation();
    const { before, moved } = this.drag;
    this.drag = null;
    if (!moved) return;
    this.pushUndo(before);
    this.changed();
  }

  onKeyDown(e) {
    if (e.target !== this.ui.keys) return; // form controls keep their keys; the host gets the rest
    const key = e.key.toLowerCase();
    const mod = e.ctrlKey || e.metaKey;
    const actions = {
      undo: mod && key === "z" && !e.shiftKey,
      redo: mod && ((key === "z" && e.shiftKey) || key === "y"),
      del: !mod && (key === "delete" || key === "backspace"),
      play: !mod && key === " ",
      help: !mod && key === "?",
      esc: key === "escape",
    };
    const name = Object.keys(actions).find((k) => actions[k]);
    if (!name) return;
    e.preventDefault();
    e.stopPropagation();
    if (name === "undo") this.undo();
    if (name === "redo") this.redo();
    if (name === "del" && this.selectedPoint >= 0) this.deletePoint(this.selected, this.selectedPoint);
    if (name === "play") (this.timer ? this.pause() : this.play());
    if (name === "help") this.ui.help.hidden = !this.ui.help.hidden;
    if (name === "esc") this.ui.help.hidden = true;
  }

  bindCanvas() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    c.addEventListener("pointermove", (e) => this.onPointerMove(e));
    c.addEventListener("pointerup", (e) => this.onPointerUp(e));
    c.addEventListener("pointercancel", (e) => this.onPointerUp(e));
    c.addEventListener("contextmenu", (e) => (e.preventDefault(), e.stopPropagation()));
    this.ui.root.addEventListener("keydown", (e) => this.onKeyDown(e));
    // After a toolbar button, shortcuts (Ctrl+Z, Delete, ...) go on working in the editor.
    this.ui.root.addEventListener("click", (e) => e.target.closest?.("button") && this.ui.keys.focus({ preventScroll: true }));
  }

  // ------------------------------------------------------------ rendering

  status(message, isError = false) {
    this.ui.status.textContent = this.ui.status.title = message;
    this.ui.status.dataset.error = isError ? "1" : "";
  }

  /** Per-track per-frame positions, or null for a track that cannot be sampled (with the reason). */
  positions() {
    const problems = [];
    if ((this.frames - 1) % 4 !== 0) problems.push(`frames ${this.frames} is not 4k+1 (5, 9, ..., 49): generation will refuse it`);
    const all = this.traj.tracks.map((t, i) => {
      if (t.kind === "path" && t.points.length < 2) {
        problems.push(`${t.name ?? `track ${i}`} needs a 2nd point (or use a hold point)`);
        return null;
      }
      try {
        return trackPositions(t, this.frames, this.traj.width, this.traj.height, i);
      } catch (err) {
        problems.push(err.message);
        return null;
      }
    });
    return { all, problems };
  }

  /** Fit the canvas to the stage with the width x height aspect ratio. */
  layout() {
    const { clientWidth: sw, clientHeight: sh } = this.ui.stage;
    if (!sw || !sh) return;
    const scale = Math.min(sw / this.traj.width, sh / this.traj.height);
    const cw = Math.max(1, Math.floor(this.traj.width * scale));
    const ch = Math.max(1, Math.floor(this.traj.height * scale));
    Object.assign(this.canvas.style, { width: `${cw}px`, height: `${ch}px` });
    const dpr = globalThis.devicePixelRatio || 1;
    this.canvas.width = Math.round(cw * dpr);
    this.canvas.height = Math.round(ch * dpr);
    this.redraw();
  }

  redraw() {
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(this.canvas.width / this.traj.width, 0, 0, this.canvas.height / this.traj.height, 0, 0);
    const { all, problems } = this.positions();
    drawEditor(ctx, {
      traj: this.traj, selected: this.selected, selectedPoint: this.selectedPoint,
      background: this.background, positions: all, frame: this.frame, px: this.px,
    });
    this.ui.problems.textContent = this.ui.problems.title = problems.join(" · ");
  }

  refresh() {
    this.ui.sync();
    this.layout();
  }
}

