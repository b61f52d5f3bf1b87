// The TrajectoryCanvas editor inside the REAL ComfyUI frontend (LiteGraph canvas), driven with real mouse
// and keyboard events, and the example workflows as a new user opens them. Needs a running ComfyUI with this
// pack installed and an image in its input folder (for LoadImage):
//   TORA_COMFYUI_URL=http://127.0.0.1:8188 node --test tests/js/comfyui.browser.test.mjs
// (recipe: ../shared/reference/comfyui.md part B). Skipped when TORA_COMFYUI_URL is unset.
// TORA_COMFYUI_VUE=1 adds the Vue node renderer ("Nodes 2.0"); frontend 1.27.10 renders no DOM widget
// there at all (comfyui.md A.3), 1.58.1 does. TORA_COMFYUI_FRONTEND=<version> asserts which frontend is served
// (tests/test_real_frontends.py runs this file on the pinned 1.27.10 and on the newest from PyPI).
// Screenshots: /tmp/tora_comfyui_frontend.png, /tmp/tora_comfyui_tiny_workflow.png.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";

import { assertNear, browserMissing, canvasPoint, dragCanvas, launch } from "./browser.mjs";
import { BADGE_HEIGHT, linksBehind, overlappingBoxes } from "./workflow_layout.mjs";

const BASE = process.env.TORA_COMFYUI_URL;
const skip = (!BASE && "TORA_COMFYUI_URL not set (needs a running ComfyUI with this pack)") || browserMissing || false;
let browser;
let page;
let ids;

before(async () => {
  if (skip) return;
  // A fresh user dir would open the first-run template dialog instead of an empty graph.
  await fetch(`${BASE}/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });
  browser = await launch({ width: 1400, height: 900 });
  page = browser.page;
  await page.goto(BASE);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.TrajectoryCanvas, null, { timeout: 60000 });
  if (process.env.TORA_COMFYUI_FRONTEND) assert.equal(await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__), process.env.TORA_COMFYUI_FRONTEND);
  // Classic LiteGraph rendering first (the setting persists in the server's user dir between runs).
  await page.evaluate(async () => {
    await app.extensionManager?.setting?.set("Comfy.VueNodes.Enabled", false);
  });
  ids = await page.evaluate(() => {
    app.graph.clear();
    const load = LiteGraph.createNode("LoadImage");
    load.pos = [20, 60];
    app.graph.add(load);
    const canvas = LiteGraph.createNode("TrajectoryCanvas");
    canvas.pos = [380, 40];
    app.graph.add(canvas);
    canvas.setSize([620, 640]);
    load.connect(0, canvas, canvas.inputs.findIndex((i) => i.name === "background"));
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    app.graph.setDirtyCanvas(true, true);
    return { load: load.id, canvas: canvas.id };
  });
});

after(async () => {
  await browser?.close();
});

const trajectoryText = () => page.evaluate((id) => app.graph.getNodeById(id).widgets.find((w) => w.name === "trajectory").value, ids.canvas);
const lastTrack = async () => {
  const text = await trajectoryText(); // "" until the first edit when the node's default is empty
  return text ? (JSON.parse(text).tracks.at(-1)?.points ?? []) : [];
};
/** Wait until a visible editor canvas shows the last track in its colour (#rrggbb): > 100 such pixels. */
const assertDrawn = async (label) => {
  const color = JSON.parse(await trajectoryText()).tracks.at(-1).color;
  const drawn = (hex) => {
    const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const counts = [...document.querySelectorAll(".tora-ed canvas")]
      .filter((c) => c.isConnected && c.offsetParent !== null)
      .map((canvas) => {
        const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
        let count = 0;
        for (let i = 0; i < data.length; i += 4) if (want.every((v, k) => Math.abs(data[i + k] - v) <= 12)) count++;
        return count;
      });
    return Math.max(0, ...counts) > 100;
  };
  await page.waitForFunction(drawn, color, { timeout: 5000 }).catch(() => assert.fail(`${label}: track ${color} not drawn`));
};
const nodeValues = () => page.evaluate((id) => JSON.parse(JSON.stringify(app.graph.serialize())).nodes.find((n) => String(n.id) === String(id)).widgets_values, ids.canvas); // ids are strings in newer frontends

test("editor replaces the raw STRING widget and shows the linked LoadImage picture", { skip }, async () => {
  const info = await page.evaluate((id) => {
    const node = app.graph.getNodeById(id);
    return {
      raw: node.widgets.find((w) => w.name === "trajectory").hidden,
      editorSerialized: node.widgets.find((w) => w.name === "trajectory_editor").serialize,
      editors: document.querySelectorAll(".tora-ed canvas").length,
      visibleTextareas: [...document.querySelectorAll("textarea")].filter((t) => t.offsetParent !== null && !t.closest(".tora-ed")).length,
    };
  }, ids.canvas);
  assert.deepEqual(info, { raw: true, editorSerialized: false, editors: 1, visibleTextareas: 0 });
  await page.waitForFunction(() => document.querySelector(".tora-ed")?.dataset.background?.includes("type=input"), null, { timeout: 10000 });
});

test("real clicks edit the workflow value; Delete and Ctrl+Z stay inside the editor", { skip }, async () => {
  const before = await lastTrack();
  const history = () => page.evaluate(() => app.extensionManager.workflow.activeWorkflow.changeTracker.undoQueue.length);
  await page.getByRole("button", { name: "+ Path" }).click();
  const steps = await history();
  for (const [x, y] of [[100, 380], [300, 120], [600, 300]]) await page.mouse.click(...(await canvasPoint(page, x, y)));
  assertNear(await lastTrack(), [[100, 380], [300, 120], [600, 300]], "new track");
  assert.equal(await history(), steps + 3, "each editor edit is one step of ComfyUI's workflow history");
  assert.equal(await page.evaluate(() => app.extensionManager.workflow.activeWorkflow.isModified), true);
  await page.mouse.click(...(await canvasPoint(page, 600, 300)));
  await page.keyboard.press("Delete");
  assert.equal((await lastTrack()).length, 2);
  assert.equal(await page.evaluate(() => app.graph._nodes.length), 2, "Delete must not remove the node");
  await page.keyboard.press("Control+z");
  assert.equal((await lastTrack()).length, 3);
  assert.notDeepEqual(before, await lastTrack());

  const values = await nodeValues();
  assert.equal(values.length, 4, "widgets_values: width, height, frames, trajectory (the editor adds no slot)");
  assert.equal(values[3], await trajectoryText());
  const inputs = await page.evaluate(async (id) => (await app.graphToPrompt()).output[String(id)].inputs, ids.canvas);
  assert.equal(inputs.trajectory, values[3]);
});

test("save -> loadGraphData round-trips; zoomed drag and width change keep canvas pixels", { skip }, async () => {
  const values = await nodeValues();
  await page.evaluate(async () => {
    await app.loadGraphData(JSON.parse(JSON.stringify(app.graph.serialize())));
  });
  await page.waitForTimeout(500);
  assert.deepEqual(await nodeValues(), values);
  await assertDrawn("reloaded editor");

  await page.evaluate(() => {
    app.canvas.ds.scale = 0.7;
    app.canvas.ds.offset = [40, 20];
    app.graph.setDirtyCanvas(true, true);
  });
  await page.waitForTimeout(500);
  await dragCanvas(page, [300, 120], [320, 200]);
  assertNear(await lastTrack(), [[100, 380], [320, 200], [600, 300]], "zoomed drag", 2.5);
  await page.evaluate((id) => {
    const w = app.graph.getNodeById(id).widgets.find((x) => x.name === "width");
    w.value = 1440;
    w.callback?.(1440);
  }, ids.canvas);
  const t = JSON.parse(await trajectoryText());
  assert.equal(t.width, 1440);
  assertNear(t.tracks.at(-1).points, [[200, 380], [640, 200], [1200, 300]], "rescaled", 5);
  await page.screenshot({ path: "/tmp/tora_comfyui_frontend.png" });

  // A workflow whose stored canvas differs from width/height loads unchanged, with a note.
  const status = await page.evaluate(async (id) => {
    const wf = JSON.parse(JSON.stringify(app.graph.serialize()));
    wf.nodes.find((n) => String(n.id) === String(id)).widgets_values[0] = 720;
    await app.loadGraphData(wf);
    await new Promise((r) => setTimeout(r, 300));
    return document.querySelector(".tora-ed .status").textContent;
  }, ids.canvas);
  assert.match(status, /drawn on a 1440x480 canvas; it is rescaled to the node's 720x480/);
  assert.equal(JSON.parse(await trajectoryText()).width, 1440);
});

test("after a run the node's returned background is shown", { skip: skip || (process.env.TORA_COMFYUI_EXECUTE === "0" && "TORA_COMFYUI_EXECUTE=0") }, async () => {
  await page.evaluate((id) => {
    // The canvas node is not an output node: give the prompt an output through its preview IMAGE.
    const node = app.graph.getNodeById(id);
    const preview = LiteGraph.createNode("PreviewImage");
    preview.pos = [1050, 40];
    app.graph.add(preview);
    node.connect(node.outputs.findIndex((o) => o.type === "IMAGE"), preview, 0);
    // A frame count not used before, so the server's cache cannot skip the node on a re-run.
    node.widgets.find((w) => w.name === "frames").value = 49 + 4 * (Date.now() % 80);
    app.queuePrompt(0, 1);
  }, ids.canvas);
  await page.waitForFunction(() => document.querySelector(".tora-ed")?.dataset.background?.includes("type=temp"), null, { timeout: 60000 });
  await page.screenshot({ path: "/tmp/tora_comfyui_executed.png" });
});

const EXAMPLES = new URL("../../example_workflows/", import.meta.url);
// Nodes no wire may pass behind: the drawing surface, the text a new user reads, and pictures.
const KEEP_CLEAR = new Set(["TrajectoryCanvas", "Note", "LoadImage", "PreviewImage", "SaveAnimatedWEBP"]);

/** Boxes (title bar and source badge included) and link end points of the graph as the frontend laid it out.
 * From each node's pos and size (getBounding() is only refreshed for nodes drawn on screen). */
const graphLayout = () =>
  page.evaluate((badge) => {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const boxes = app.graph._nodes.map((n) => {
      const top = title + (n.badges?.length ? badge : 0);
      return { id: String(n.id), type: n.type, x: n.pos[0], y: n.pos[1] - top, w: n.size[0], h: n.size[1] + top };
    });
    const all = app.graph.links instanceof Map ? [...app.graph.links.values()] : Object.values(app.graph.links);
    const links = all.map((l) => ({
      id: l.id,
      from: String(l.origin_id),
      to: String(l.target_id),
      a: [...app.graph.getNodeById(l.origin_id).getConnectionPos(false, l.origin_slot)],
      b: [...app.graph.getNodeById(l.target_id).getConnectionPos(true, l.target_slot)],
    }));
    return { boxes, links };
  }, BADGE_HEIGHT);

test("example workflows as a new user opens them: nothing overlaps, no wire behind the canvas, Note says Run", { skip }, async () => {
  const files = readdirSync(EXAMPLES).filter((f) => f.endsWith(".json"));
  assert.equal(files.length, 4);
  // A fresh page, as a new user has: the frontend keeps earlier run outputs by node id, and a node of a loaded
  // workflow with the id of an earlier PreviewImage would show (and grow to) that picture.
  await page.reload();
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.TrajectoryCanvas, null, { timeout: 60000 });
  for (const file of files) {
    const workflow = JSON.parse(readFileSync(new URL(file, EXAMPLES), "utf8"));
    await page.evaluate(async (wf) => {
      await app.loadGraphData(wf);
    }, workflow);
    await page.keyboard.press("Escape"); // the missing-model dialog of the Tora workflows (no weights here)
    await page.waitForTimeout(300);
    const { boxes, links } = await graphLayout();
    assert.deepEqual(overlappingBoxes(boxes), [], `${file}: overlapping nodes (title bar and badge included)`);
    const clear = boxes.filter((b) => KEEP_CLEAR.has(b.type));
    assert.deepEqual(linksBehind(links, clear), [], `${file}: wires behind the canvas, the Note or a picture`);
    const notes = await page.evaluate(() => app.graph._nodes.filter((n) => n.type === "Note").map((n) => n.widgets[0].value));
    assert.equal(notes.length, 1, file);
    assert.match(notes[0], /press Run/, `${file}: the Note names the Run button`);
    if (workflow.nodes.some((n) => n.type === "ToraTinyScene")) {
      // Before any run, the canvas already shows the scene the Tiny Tora Scene node will output.
      await page.waitForFunction(() => document.querySelector(".tora-ed")?.dataset.background?.startsWith("data:image/png"), null, { timeout: 10000 });
      await page.screenshot({ path: "/tmp/tora_comfyui_tiny_workflow.png" });
    }
  }
});

test("template browser: cards titled with the workflow names, thumbnails served from the pack's web folder", { skip }, async () => {
  const names = readdirSync(EXAMPLES).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -".json".length));
  const listed = await (await fetch(`${BASE}/workflow_templates`)).json();
  const module = Object.keys(listed).find((m) => names.every((n) => listed[m].includes(n)));
  assert.ok(module, `no module lists ${names}: ${JSON.stringify(listed)}`);
  // No thumbnail sits beside the workflows (newer cores serve only .json there): each card's picture must come
  // from web/js/example_thumbnails through template_thumbnails.js.
  const shown = new Map();
  const record = (r) => {
    const m = /\/example_thumbnails\/([^/?]+)\.jpg$/.exec(decodeURIComponent(new URL(r.url()).pathname));
    if (m) shown.set(m[1], r.status());
  };
  page.on("response", record);
  await page.evaluate(() => app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  await page.getByText(module, { exact: true }).first().click();
  for (const name of names) await page.getByText(name, { exact: true }).first().waitFor({ state: "visible" });
  await page.waitForFunction((n) => document.querySelectorAll("img[src^='blob:'], img[src*='example_thumbnails']").length >= n, names.length, { timeout: 15000 });
  await page.screenshot({ path: "/tmp/tora_comfyui_templates.png" });
  page.off("response", record);
  const clipped = await page.evaluate(
    (titles) => titles.filter((t) => [...document.querySelectorAll("*")].some((el) => !el.childElementCount && el.textContent.trim() === t && el.offsetParent && el.scrollWidth > el.clientWidth + 1)),
    names,
  );
  assert.deepEqual(clipped, [], "card titles cut short (ellipsis)");
  await page.keyboard.press("Escape");
  assert.deepEqual([...shown.keys()].sort(), [...names].sort());
  assert.ok([...shown.values()].every((status) => status === 200), JSON.stringify([...shown]));
});

test("Vue node renderer: the editor is the node's DOM widget and edits the same value", { skip: skip || (process.env.TORA_COMFYUI_VUE !== "1" && "TORA_COMFYUI_VUE not set") }, async () => {
  await page.evaluate(async () => {
    await app.extensionManager.setting.set("Comfy.VueNodes.Enabled", true);
  });
  ids.canvas = await page.evaluate(() => {
    app.graph.clear();
    const node = LiteGraph.createNode("TrajectoryCanvas");
    node.pos = [380, 40];
    app.graph.add(node);
    node.setSize([620, 640]);
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    app.graph.setDirtyCanvas(true, true);
    return node.id;
  });
  await page.locator(".tora-ed canvas").waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => [...document.querySelectorAll("textarea")].filter((t) => t.offsetParent !== null && !t.closest(".tora-ed")).length), 0);
  await page.getByRole("button", { name: "+ Path" }).click();
  for (const [x, y] of [[100, 380], [300, 120], [600, 300]]) await page.mouse.click(...(await canvasPoint(page, x, y)));
  assertNear(await lastTrack(), [[100, 380], [300, 120], [600, 300]], "Vue mode track", 2.5);
  await assertDrawn("Vue mode");

  // Save and reload in the Vue renderer: the value comes back and the new editor draws it.
  const values = await nodeValues();
  await page.evaluate(async () => {
    await app.loadGraphData(JSON.parse(JSON.stringify(app.graph.serialize())));
  });
  await page.locator(".tora-ed canvas").waitFor({ state: "visible" });
  await page.waitForTimeout(500);
  assert.deepEqual(await nodeValues(), values);
  assertNear(await lastTrack(), [[100, 380], [300, 120], [600, 300]], "Vue mode track after reload", 2.5);
  await assertDrawn("Vue mode, reloaded");
  await page.screenshot({ path: "/tmp/tora_comfyui_vue.png" });
  await page.evaluate(async () => {
    await app.extensionManager.setting.set("Comfy.VueNodes.Enabled", false); // the setting outlives this run
  });
});
