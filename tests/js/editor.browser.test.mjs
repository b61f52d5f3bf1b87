// Browser test of the TrajectoryEditor in headless Chromium (playwright-core + Debian chromium), driven
// with real mouse and keyboard events on tests/js/editor_page.html. Skips with a message when chromium or
// playwright-core is missing (dev machines); scripts/test_js.sh installs both and sets TORA_REQUIRE_BROWSER=1
// so that CI fails instead of skipping.
// Screenshot: /tmp/tora_editor_browser.png (override with TORA_SCREENSHOT).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const screenshot = process.env.TORA_SCREENSHOT ?? "/tmp/tora_editor_browser.png";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];

let chromium = null;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  chromium = null;
}
const skip = !existsSync(chromiumPath)
  ? `chromium not found at ${chromiumPath} (apt-get install chromium, or run scripts/test_js.sh)`
  : !chromium && "playwright-core not installed (npm ci)";

test("browser available when required (TORA_REQUIRE_BROWSER=1, set by scripts/test_js.sh)", () => {
  if (process.env.TORA_REQUIRE_BROWSER === "1") assert.equal(skip, false, `browser test cannot run: ${skip}`);
});

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript" };
let server;
let base;
let context;
let profile;
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
  profile = mkdtempSync("/tmp/tora-chromium-profile-");
  context = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, headless: true, args: FLAGS, viewport: { width: 800, height: 640 } });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => {
    throw err;
  });
});

after(async () => {
  await context?.close();
  server?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function open(value = "") {
  await page.goto(`${base}?value=${encodeURIComponent(value)}`);
  await page.waitForFunction(() => window.editorReady === true);
}

/** Page coordinates of a point given in trajectory-canvas pixels (720 x 480). */
async function at(x, y) {
  const box = await page.locator("canvas").boundingBox();
  return [box.x + (x / 720) * box.width, box.y + (y / 480) * box.height];
}

async function click(x, y, options = {}) {
  await page.mouse.click(...(await at(x, y)), options);
}

async function drag(from, to) {
  await page.mouse.move(...(await at(...from)));
  await page.mouse.down();
  await page.mouse.move(...(await at(...to)), { steps: 8 });
  await page.mouse.up();
}

const value = () => page.evaluate(() => window.editor.getValue());
const stored = async () => JSON.parse(await value());

function near(actual, expected, label) {
  // One CSS pixel is ~1 canvas pixel here; mouse positions land on whole CSS pixels.
  actual.forEach((p, i) => {
    assert.ok(Math.hypot(p[0] - expected[i][0], p[1] - expected[i][1]) < 1.5, `${label} point ${i}: ${p} vs ${expected[i]}`);
  });
  assert.equal(actual.length, expected.length, `${label}: point count`);
}

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

  // Scrub to frame 22: the dot of track 2 sits where the geometry module puts it.
  await page.locator('input[type="range"]').focus();
  await page.keyboard.press("End");
  assert.match(await page.locator(".row span").last().textContent(), /frame 48 \/ 48/);
  await page.keyboard.press("?");
  assert.equal(await page.locator(".help").isVisible(), false, "? typed in the scrubber is not a shortcut");
  await page.locator("canvas").focus();
  await page.keyboard.press("?");
  assert.equal(await page.locator(".help").isVisible(), true);
  await page.keyboard.press("Escape");
  await page.evaluate(() => window.editor.setFrame(22));
  await page.screenshot({ path: screenshot });
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
