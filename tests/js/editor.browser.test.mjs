// Browser test of the TrajectoryEditor in headless Chromium (playwright-core + Debian chromium), driven
// with real mouse and keyboard events on tests/js/editor_page.html. Skips with a message when chromium or
// playwright-core is missing (dev machines); scripts/test_js.sh installs both and sets TORA_REQUIRE_BROWSER=1
// so that CI fails instead of skipping.
// Screenshot: /tmp/tora_editor_browser.png (override with TORA_SCREENSHOT).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

import { assertBrowserWhenRequired, assertNear as near, browserMissing, canvasPoint, dragCanvas, launch } from "./browser.mjs";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const screenshot = process.env.TORA_SCREENSHOT ?? "/tmp/tora_editor_browser.png";
const skip = browserMissing || false; // node:test skips on any string, even ""

test("browser available when required (TORA_REQUIRE_BROWSER=1, set by scripts/test_js.sh)", assertBrowserWhenRequired);

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript" };
let server;
let base;
let browser;
let page;

before(async () => {
  if (skip) return;
  server = createServer((req, res) => {
    const rel = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^[/\\]+/, "");
    const file = join(repo, rel);
    if (!file.startsWith(repo) || !existsSync(file) || !TYPES[extname(file)]) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] }).end(readFileSync(file));
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  base = `http://127.0.0.1:${server.address().port}/tests/js/editor_page.html`;
  browser = await launch({ width: 800, height: 640 });
  page = browser.page;
  page.on("pageerror", (err) => {
    throw err;
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function open(value = "") {
  await page.goto(`${base}?value=${encodeURIComponent(value)}`);
  await page.waitForFunction(() => window.editorReady === true);
}

async function click(x, y, options = {}) {
  await page.mouse.click(...(await canvasPoint(page, x, y)), options);
}

const drag = (from, to) => dragCanvas(page, from, to);
const value = () => page.evaluate(() => window.editor.getValue());
const stored = async () => JSON.parse(await value());

test("draw two tracks, move, undo/redo, insert/delete, timing -> stored JSON v1; screenshot", { skip }, async () => {
  await open();
  // Track 1 starts with a click on the empty canvas.
  for (const [x, y] of [[100, 100], [300, 150], [500, 100]]) await click(x, y);
  await page.getByRole("button", { name: "+ Path" }).click();
  for (const [x, y] of [[100, 400], [600, 400]]) await click(x, y);
  let t = await stored();
  assert.equal(t.version, 1);
  assert.deepEqual([t.width, t.height], [720, 480]);
  near(t.tracks[0].points, [[100, 100], [300, 150], [500, 100]], "track 1");
  near(t.tracks[1].points, [[100, 400], [600, 400]], "track 2");
  assert.notEqual(t.tracks[0].color, t.tracks[1].color);

  // Dragging a point of the other track selects it and moves the point; Ctrl+Z puts it back.
  await drag([300, 150], [320, 260]);
  near((await stored()).tracks[0].points, [[100, 100], [320, 260], [500, 100]], "after drag");
  await page.keyboard.press("Control+z");
  near((await stored()).tracks[0].points, [[100, 100], [300, 150], [500, 100]], "after undo");
  await page.keyboard.press("Control+Shift+z");
  near((await stored()).tracks[0].points, [[100, 100], [320, 260], [500, 100]], "after redo");

  // Click on track 2's curve (select it first), then on its line again to insert a point.
  await click(350, 400);
  await click(350, 400);
  near((await stored()).tracks[1].points, [[100, 400], [350, 400], [600, 400]], "inserted");
  // Right click deletes a point; Delete removes the selected (last clicked) one.
  await click(350, 400, { button: "right" });
  near((await stored()).tracks[1].points, [[100, 400], [600, 400]], "right-click delete");
  await click(650, 300);
  await page.keyboard.press("Delete");
  near((await stored()).tracks[1].points, [[100, 400], [600, 400]], "Delete key");

  // Timing of track 2 through the panel, with the keyboard.
  await page.locator('input[type="number"]').first().fill("5");
  await page.keyboard.press("Tab");
  await page.locator('input[type="number"]').nth(1).fill("40");
  await page.keyboard.press("Tab");
  await page.locator("select").nth(2).selectOption("ease-in-out");
  await page.locator("select").nth(1).selectOption("linear");
  t = await stored();
  assert.deepEqual(
    [t.tracks[1].start_frame, t.tracks[1].end_frame, t.tracks[1].easing, t.tracks[1].interpolation],
    [5, 40, "ease-in-out", "linear"],
  );
  assert.deepEqual([t.tracks[0].start_frame, t.tracks[0].end_frame, t.tracks[0].easing], [0, null, "linear"]);
  // An end frame past the last frame is refused with a message and the value stays.
  await page.locator('input[type="number"]').nth(1).fill("49");
  await page.keyboard.press("Tab");
  assert.match(await page.locator(".status").textContent(), /field 'end_frame': 49 must be < frames \(49\)/);
  assert.equal((await stored()).tracks[1].end_frame, 40);

  // A hold point, then the onChange callback saw the same text as getValue().
  await page.getByRole("button", { name: "+ Hold" }).click();
  t = await stored();
  assert.deepEqual(t.tracks[2].kind, "hold");
  assert.deepEqual(t.tracks[2].points, [[360, 240]]);
  assert.equal(await page.evaluate(() => window.changes.at(-1)), await value());

  // Help overlay: "?" on the canvas (typed into a form control it is just a key).
  await page.locator('input[type="range"]').focus();
  await page.keyboard.press("?");
  assert.equal(await page.locator(".help").isVisible(), false, "? typed in the scrubber is not a shortcut");
  await page.locator(".tora-ed .keys").focus();
  await page.keyboard.press("?");
  assert.equal(await page.locator(".help").isVisible(), true);
  await page.keyboard.press("Escape");
  assert.equal(await page.locator(".help").isVisible(), false);

  // Scrub with the keyboard to frame 22: track 2's dot is drawn where the geometry module puts it.
  await page.locator('input[type="range"]').focus();
  await page.keyboard.press("End");
  assert.match(await page.locator(".row span").last().textContent(), /frame 48 \/ 48/);
  await page.keyboard.press("Home");
  for (let i = 0; i < 22; i++) await page.keyboard.press("ArrowRight");
  assert.match(await page.locator(".row span").last().textContent(), /frame 22 \/ 48/);
  const colorAt = (frame, dy) =>
    page.evaluate(
      async ([frame, dy]) => {
        const geo = await import("/web/js/trajectory_geometry.js");
        const { editor } = window;
        const [x, y] = geo.trackPositions(editor.traj.tracks[1], 49, 720, 480, 1)[frame];
        const c = editor.canvas;
        const sx = c.width / 720;
        const px = c.getContext("2d").getImageData(Math.round(x * sx), Math.round((y + dy * editor.px) * sx), 1, 1).data;
        return [x, Array.from(px.slice(0, 3))];
      },
      [frame, dy],
    );
  const trackRgb = (await stored()).tracks[1].color.match(/\w\w/g).map((h) => parseInt(h, 16));
  const [x22, dotRgb] = await colorAt(22, 5); // 5 CSS px below the line: inside the 7 px dot only
  assert.ok(Math.abs(x22 - (100 + 500 * 2 * (17 / 35) ** 2)) < 1e-9, `frame 22 x ${x22}`);
  assert.deepEqual(dotRgb, trackRgb, "dot at frame 22");
  const [, elsewhere] = await colorAt(40, 5);
  assert.notDeepEqual(elsewhere, trackRgb, "no dot at frame 40's position");
  await page.screenshot({ path: screenshot });

  // Space plays (8 frames per second) and pauses.
  await page.locator(".tora-ed .keys").focus();
  // Waits for frames instead of sleeping, so a loaded CI box cannot make it flaky; the rate bound allows the lag.
  const started = Date.now();
  await page.keyboard.press(" ");
  await page.waitForFunction(() => window.editor.frame >= 25);
  await page.keyboard.press(" ");
  const elapsed = Date.now() - started;
  const playedTo = await page.evaluate(() => window.editor.frame);
  assert.ok(playedTo - 22 <= Math.ceil(elapsed / 125) + 1, `played ${playedTo - 22} frames in ${elapsed} ms (8 per second)`);
  await page.waitForTimeout(300);
  assert.equal(await page.evaluate(() => window.editor.frame), playedTo, "paused");
});

test("stored value round-trips exactly through reload", { skip }, async () => {
  await open();
  for (const [x, y] of [[50, 60], [200, 300], [400, 120], [700, 470]]) await click(x, y);
  const text = await value();
  await open(text);
  assert.equal(await value(), text);
  assert.equal(await page.locator(".warn").isVisible(), false);
  // One edit and its undo give back the same text, serialized again from the editor state.
  await drag([200, 300], [210, 310]);
  assert.notEqual(await value(), text);
  await page.keyboard.press("Control+z");
  assert.equal(await value(), text);
});

test("corrupt or unknown-version values open empty, warn, and are kept until an edit", { skip }, async () => {
  for (const [raw, re] of [["{not json", /not valid JSON/], ['{"version": 2, "width": 1, "height": 1, "tracks": []}', /unsupported trajectory version 2/]]) {
    await open(raw);
    assert.match(await page.locator(".warn").textContent(), re);
    assert.equal(await value(), raw);
    assert.equal(await page.locator("select").first().textContent(), "no tracks");
    await click(100, 100);
    await click(200, 200);
    assert.equal((await stored()).tracks.length, 1);
    assert.equal(await page.locator(".warn").isVisible(), false);
  }
});

test("import official .txt and JSON, export .txt and JSON through the toolbar", { skip }, async () => {
  await open();
  const file = page.locator('input[type="file"]');
  // The panel reads files asynchronously (File.text()); every import ends with a status line naming the file.
  const importFile = async (name, mimeType, text) => {
    await file.setInputFiles({ name, mimeType, buffer: Buffer.from(text) });
    await page.waitForFunction((n) => document.querySelector(".status")?.textContent.includes(n), name);
  };
  await importFile("official.txt", "text/plain", "0,0\n128, 64\n255,255\n");
  let t = await stored();
  assert.deepEqual(t.tracks[0].points, [[0, 0], [360, 120], [717.1875, 478.125]]);
  assert.deepEqual([t.tracks[0].kind, t.tracks[0].interpolation], ["path", "linear"]);

  const download = async (name) => {
    const [d] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name, exact: true }).click()]);
    return readFileSync(await d.path(), "utf8");
  };
  const txt = (await download(".txt")).trimEnd().split("\n");
  assert.equal(txt.length, 49, "one line per frame");
  assert.deepEqual([txt[0], txt[48]], ["0,0", "255,255"]);
  assert.equal(await download("JSON"), await value());

  // JSON from another canvas size replaces the tracks, rescaled to this canvas; one undo brings them back.
  const other = { version: 1, width: 256, height: 256, tracks: [{ kind: "hold", points: [[128, 64]], interpolation: "linear", start_frame: 0, end_frame: null, easing: "linear" }] };
  const before = await value();
  await importFile("other.json", "application/json", JSON.stringify(other));
  t = await stored();
  assert.deepEqual(t.tracks, [{ ...other.tracks[0], points: [[360, 120]] }]);
  await page.locator(".tora-ed .keys").focus();
  await page.keyboard.press("Control+z");
  assert.equal(await value(), before);

  // A bad file changes nothing and says why.
  await importFile("bad.txt", "text/plain", "1,2\n300,4\n");
  assert.match(await page.locator(".status").textContent(), /import of bad\.txt failed: line 2: x=300 is outside the official 256 canvas/);
  assert.equal(await value(), before);
});
