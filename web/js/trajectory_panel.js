// The DOM around the TrajectoryCanvas drawing surface: toolbar, per-track timing row, timeline, warning
// and status lines, help overlay. buildPanel(editor) wires the controls to editor methods and returns the
// elements plus sync(), which copies the editor state into the controls.

import { EASINGS, INTERPOLATIONS } from "./trajectory_geometry.js";

export const HELP_ROWS = [
  ["Click on empty canvas", "add a point at the end of the selected path (or start a new path)"],
  ["Click on a curve", "insert a point there (selects another track's curve first)"],
  ["Drag a point", "move it (stays inside the canvas)"],
  ["Right-click a point", "delete it (a hold track is deleted with its point)"],
  ["Delete / Backspace", "delete the selected point"],
  ["Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y)", "undo / redo"],
  ["Space", "play / pause the timeline"],
  ["+ Path / + Hold", "new moving track / new still point (holds its place in every frame)"],
  ["Start, End, Easing", "when the selected track moves: frames start..end (empty end = last frame)"],
  ["Import", ".json (JSON v1, rescaled to this canvas) or official .txt (256 canvas, added as a track)"],
  ["Export .txt", "selected track, one line per frame, integers on the 256 canvas"],
  ["? / Esc", "show / hide this help"],
];

const CSS = `
.tora-ed{display:flex;flex-direction:column;gap:3px;width:100%;height:100%;box-sizing:border-box;font:12px sans-serif;color:#ddd;position:relative}
.tora-ed .row{display:flex;flex-wrap:wrap;gap:3px;align-items:center}
.tora-ed button,.tora-ed select,.tora-ed input{font:12px sans-serif;background:#2b2e33;color:#ddd;border:1px solid #555;border-radius:3px;padding:1px 4px}
.tora-ed button:disabled{opacity:.4}
.tora-ed input[type=number]{width:48px}
.tora-ed input[type=range]{flex:1;min-width:60px}
.tora-ed .stage{flex:1;min-height:60px;display:flex;align-items:center;justify-content:center;overflow:hidden;position:relative}
.tora-ed .keys{position:absolute;left:0;top:0;width:1px;height:1px;opacity:0;padding:0;border:0;resize:none;pointer-events:none}
.tora-ed .stage:has(.keys:focus-visible) canvas{outline:1px solid #8ab4f8}
.tora-ed canvas{cursor:crosshair;touch-action:none;outline:none}
.tora-ed .warn{background:#5a3a00;color:#ffd27a;padding:2px 4px;border-radius:3px}
.tora-ed .msgs{display:flex;gap:8px;height:16px;line-height:16px;overflow:hidden;white-space:nowrap}
.tora-ed .msgs>div{overflow:hidden;text-overflow:ellipsis}
.tora-ed .problems{color:#ffb070}
.tora-ed .status[data-error="1"]{color:#ff7070}
.tora-ed .help{position:absolute;inset:24px 8px auto 8px;background:rgba(20,20,24,.96);border:1px solid #666;border-radius:4px;padding:6px;z-index:2}
.tora-ed .help td{padding:1px 6px;vertical-align:top}
`;

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const button = (text, title, onclick) => el("button", { textContent: text, title, onclick, type: "button" });
const select = (values, title, onchange) =>
  el("select", { title, onchange }, values.map((v) => el("option", { value: v, textContent: v })));

function injectStyle() {
  if (document.getElementById("tora-editor-style")) return;
  document.head.appendChild(el("style", { id: "tora-editor-style", textContent: CSS }));
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  el("a", { href: url, download: name }).click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function intOrNull(input) {
  const v = input.value.trim();
  return v === "" ? null : Number(v);
}

export function buildPanel(ed) {
  injectStyle();
  const setField = (field, value) => {
    const error = ed.setTrackField(field, value);
    ed.status(error, Boolean(error));
    ui.sync();
  };
  const file = el("input", { type: "file", accept: ".json,.txt", hidden: true });
  file.onchange = async () => {
    for (const f of file.files) ed.importText(f.name, await f.text());
    file.value = "";
  };
  const ui = {
    trackSelect: el("select", { title: "Selected track", onchange: () => ((ed.selected = Number(ui.trackSelect.value)), (ed.selectedPoint = -1), ed.refresh()) }),
    addPath: button("+ Path", "New moving track: then click on the canvas to place its points", () => ed.newTrack("path")),
    addHold: button("+ Hold", "New still point: stays in place for every frame (drag it where it belongs)", () => ed.newTrack("hold")),
    delTrack: button("✕ Track", "Delete the selected track", () => ed.deleteTrack()),
    undo: button("↶", "Undo (Ctrl+Z)", () => ed.undo()),
    redo: button("↷", "Redo (Ctrl+Shift+Z)", () => ed.redo()),
    importBtn: button("Import", "Import a .json trajectory or an official .txt track", () => file.click()),
    exportJson: button("JSON", "Export all tracks as JSON v1", () => download("trajectory.json", ed.exportJson())),
    exportTxt: button(".txt", "Export the selected track as official Tora .txt (256 canvas)", () => {
      const text = ed.exportTxt();
      if (text !== null) download(`${ed.track?.name ?? "track"}.txt`.replace(/\s+/g, "_"), text);
    }),
    helpBtn: button("?", "Mouse and keyboard help (?)", () => (ui.help.hidden = !ui.help.hidden)),
    interpolation: select(INTERPOLATIONS, "Curve: smooth (centripetal Catmull-Rom) or linear", () => setField("interpolation", ui.interpolation.value)),
    start: el("input", { type: "number", min: 0, step: 1, title: "First frame of the motion (the track waits at its first point before)", onchange: () => setField("start_frame", intOrNull(ui.start) ?? 0) }),
    end: el("input", { type: "number", min: 1, step: 1, placeholder: "last", title: "Frame where the motion ends (empty = last frame)", onchange: () => setField("end_frame", intOrNull(ui.end)) }),
    easing: select(Object.keys(EASINGS), "Speed profile along the curve", () => setField("easing", ui.easing.value)),
    play: button("▶", "Play / pause (Space)", () => (ed.timer ? ed.pause() : ed.play())),
    scrub: el("input", { type: "range", min: 0, step: 1, title: "Frame", oninput: () => ed.setFrame(Number(ui.scrub.value)) }),
    frameLabel: el("span"),
    warning: el("div", { className: "warn", hidden: true }),
    problems: el("div", { className: "problems" }),
    status: el("div", { className: "status" }),
    canvas: el("canvas"),
    // Keyboard focus lives in a hidden read-only textarea: hosts such as ComfyUI treat a focused text field
    // as "typing" and leave its keys alone (their own Ctrl+Z would otherwise reload the whole graph).
    keys: el("textarea", { className: "keys", readOnly: true, ariaLabel: "Trajectory editor: press ? for keyboard help" }),
    help: el("div", { className: "help", hidden: true }),
  };
  ui.help.append(el("b", { textContent: "Trajectory editor" }), el("table", {}, HELP_ROWS.map(([k, v]) => el("tr", {}, [el("td", { textContent: k }), el("td", { textContent: v })]))));
  ui.stage = el("div", { className: "stage" }, [ui.canvas, ui.keys]);
  const label = (text) => el("span", { textContent: text });
  ui.root = el("div", { className: "tora-ed" }, [
    el("div", { className: "row" }, [ui.trackSelect, ui.addPath, ui.addHold, ui.delTrack, ui.undo, ui.redo, ui.importBtn, ui.exportJson, ui.exportTxt, ui.helpBtn, file]),
    el("div", { className: "row" }, [ui.interpolation, label("start"), ui.start, label("end"), ui.end, ui.easing]),
    ui.warning,
    ui.stage,
    el("div", { className: "row" }, [ui.play, ui.scrub, ui.frameLabel]),
    el("div", { className: "msgs" }, [ui.status, ui.problems]),
    ui.help,
  ]);
  ui.sync = () => syncPanel(ed, ui);
  return ui;
}

function syncPanel(ed, ui) {
  const tracks = ed.traj.tracks;
  ui.trackSelect.replaceChildren(
    ...(tracks.length ? tracks.map((t, i) => el("option", { value: i, textContent: `${t.name ?? `Track ${i + 1}`} (${t.kind})` })) : [el("option", { value: -1, textContent: "no tracks" })]),
  );
  ui.trackSelect.value = String(ed.selected);
  ui.trackSelect.style.borderLeft = `6px solid ${ed.track?.color ?? "#555"}`;
  const t = ed.track;
  for (const c of [ui.delTrack, ui.exportTxt, ui.interpolation, ui.start, ui.end, ui.easing]) c.disabled = !t;
  for (const c of [ui.interpolation, ui.start, ui.end, ui.easing]) c.disabled ||= t.kind === "hold";
  ui.undo.disabled = !ed.undoStack.length;
  ui.redo.disabled = !ed.redoStack.length;
  if (t) {
    ui.interpolation.value = t.interpolation;
    ui.start.value = String(t.start_frame);
    ui.end.value = t.end_frame === null ? "" : String(t.end_frame);
    ui.easing.value = t.easing;
  }
  ui.start.max = ui.end.max = String(ed.frames - 1);
  ui.scrub.max = String(ed.frames - 1);
  ui.scrub.value = String(ed.frame);
  ui.frameLabel.textContent = `frame ${ed.frame} / ${ed.frames - 1}`;
  ui.warning.textContent = ed.warning ?? "";
  ui.warning.hidden = !ed.warning;
}
