// ComfyUI entry for the TrajectoryCanvas node: only registers the extension. It hides the node's raw
// "trajectory" STRING widget (which stays the serialized value, so the workflow still loads without this
// file) and shows a TrajectoryEditor in a DOM widget that writes the JSON v1 text back into it.
// Backgrounds: the node's execution result (ui "tora_background" or "images": [{filename, subfolder,
// type}]) and, before anything runs, the image of the node linked to "background": a core LoadImage's
// selected file, or the scene picture a workflow stores on a Tiny Tora Scene node for its seed and objects.
// Served as /extensions/<pack>/tora_canvas.js, hence "../../scripts/*" for the frontend's module shims.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { TrajectoryEditor } from "./trajectory_editor.js";

const NODE_TYPE = "TrajectoryCanvas";
const EDITOR_HEIGHT = 380;
const state = new WeakMap(); // node -> {editor, linkedUrl}

const widget = (node, name) => node.widgets?.find((w) => w.name === name);
const numberOf = (node, name, fallback) => Number(widget(node, name)?.value ?? fallback);

function viewUrl({ filename, subfolder = "", type = "temp" }) {
  return api.apiURL(`/view?${new URLSearchParams({ filename, subfolder, type })}`);
}

/** LoadImage's "image" value ("sub/dir/name.png" or "name.png [input]") -> /view reference. */
function loadImageRef(value) {
  const m = /^(.*?)(?: \[(input|output|temp)\])?$/.exec(String(value ?? "").trim());
  if (!m || !m[1]) return null;
  const parts = m[1].split("/");
  return { filename: parts.pop(), subfolder: parts.join("/"), type: m[2] ?? "input" };
}

/** The node linked to the "background" input, if any. */
function linkedSource(node) {
  const input = node.inputs?.find((i) => i.name === "background");
  if (input?.link == null) return null;
  const link = node.graph?.links?.get?.(input.link) ?? node.graph?.links?.[input.link];
  return (link && node.graph.getNodeById(link.origin_id)) ?? null;
}

/** What the linked node will output, where that is known before a run (null otherwise). */
function linkedImageUrl(source) {
  const type = source && (source.comfyClass ?? source.type);
  if (type === "LoadImage") {
    const ref = loadImageRef(widget(source, "image")?.value);
    return ref ? viewUrl(ref) : null;
  }
  // Tiny Tora Scene: the example workflow stores its scene picture (PNG data URL) with the seed and objects it
  // shows; any other seed or count is unknown until the node runs.
  const scene = type === "ToraTinyScene" ? source.properties?.tora_scene_preview : null;
  const same = scene && ["seed", "objects"].every((k) => Number(widget(source, k)?.value) === scene[k]);
  return same ? scene.image : null;
}

/** Show the linked node's picture; cheap when nothing changed (called on every foreground draw). */
function refreshLinkedBackground(node) {
  const s = state.get(node);
  if (!s) return;
  const url = linkedImageUrl(linkedSource(node));
  if (url === s.linkedUrl) return;
  if (url || s.linkedUrl) s.editor.setBackground(url);
  s.linkedUrl = url;
}

/** Say so when the stored canvas is not the node's width x height (the Python side rescales it). */
function noteCanvasMismatch(node, editor) {
  const [w, h] = [numberOf(node, "width", 720), numberOf(node, "height", 480)];
  const { width, height } = editor.traj;
  if (width !== w || height !== h) {
    editor.status(`drawn on a ${width}x${height} canvas; it is rescaled to the node's ${w}x${h} (change width/height to rescale the points)`);
  }
}

function hideWidget(w) {
  w.hidden = true; // frontend >= 1.16: skipped in layout, drawing and DOM placement
  w.computeSize = () => [0, -4]; // older LiteGraph layouts
}

function chain(obj, name, after) {
  const before = obj[name];
  obj[name] = function (...args) {
    const result = before?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

function setupNode(node) {
  const raw = widget(node, "trajectory");
  if (!raw || state.has(node)) return;
  hideWidget(raw);
  const host = document.createElement("div");
  host.style.cssText = "width:100%;height:100%";
  const editor = new TrajectoryEditor(host, {
    width: numberOf(node, "width", 720),
    height: numberOf(node, "height", 480),
    frames: numberOf(node, "frames", 49),
    onChange: (text) => {
      // Wrapped as one graph change so ComfyUI's workflow history and "modified" mark see every edit
      // (the editor cancels pointerdown, so the window mouseup that usually triggers this never comes).
      app.canvas?.emitBeforeChange?.();
      raw.value = text;
      app.canvas?.emitAfterChange?.();
      node.setDirtyCanvas?.(true, true);
    },
  });
  editor.setValue(raw.value);
  state.set(node, { editor, linkedUrl: null });
  const dom = node.addDOMWidget("trajectory_editor", "TORA_TRAJECTORY_EDITOR", host, {
    getValue: () => editor.getValue(),
    setValue: (v) => editor.setValue(v),
    getMinHeight: () => EDITOR_HEIGHT,
    hideOnZoom: false,
    serialize: false, // the hidden "trajectory" STRING widget carries the value
  });
  dom.serialize = false;
  // Size widgets: a user change rescales the drawn points (loading a workflow never does).
  for (const name of ["width", "height"]) {
    const w = widget(node, name);
    if (w) chain(w, "callback", () => editor.setCanvasSize(numberOf(node, "width", 720), numberOf(node, "height", 480)));
  }
  const frames = widget(node, "frames");
  if (frames) chain(frames, "callback", () => editor.setFrames(numberOf(node, "frames", 49)));
  chain(node, "onRemoved", () => editor.destroy());
  const [w, h] = node.size;
  node.setSize?.([Math.max(w, 460), Math.max(h, node.computeSize?.()[1] ?? EDITOR_HEIGHT)]);
}

app.registerExtension({
  name: "comfyui-tora.TrajectoryCanvas",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const proto = nodeType.prototype;
    chain(proto, "onNodeCreated", function () {
      setupNode(this);
    });
    chain(proto, "onConfigure", function () {
      const s = state.get(this);
      if (!s) return;
      s.editor.setFrames(numberOf(this, "frames", 49));
      const size = { width: numberOf(this, "width", 720), height: numberOf(this, "height", 480) };
      s.editor.setValue(widget(this, "trajectory")?.value ?? "", size);
      noteCanvasMismatch(this, s.editor);
    });
    chain(proto, "onExecuted", function (message) {
      const ref = message?.tora_background?.[0] ?? message?.images?.[0];
      if (ref) state.get(this)?.editor.setBackground(viewUrl(ref));
    });
    chain(proto, "onConnectionsChange", function () {
      refreshLinkedBackground(this);
    });
    chain(proto, "onDrawForeground", function () {
      refreshLinkedBackground(this);
      // frames may be set without a callback (converted to an input, set by a script): follow it cheaply.
      const s = state.get(this);
      const frames = numberOf(this, "frames", 49);
      if (s && s.editor.frames !== frames) s.editor.setFrames(frames);
    });
  },
  afterConfigureGraph() {
    for (const node of app.graph?._nodes ?? []) if (state.has(node)) refreshLinkedBackground(node);
  },
});
