// Shared set-up of the browser tests: headless Debian chromium through playwright-core, or a skip reason.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";

export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];

let chromium = null;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  chromium = null;
}

/** Why the browser tests cannot run here ("" when they can). */
export const browserMissing = !existsSync(chromiumPath)
  ? `chromium not found at ${chromiumPath} (apt-get install chromium, or run scripts/test_js.sh)`
  : !chromium
    ? "playwright-core not installed (npm ci)"
    : "";

/** Fail instead of skipping when CI asked for the browser (scripts/test_js.sh sets TORA_REQUIRE_BROWSER=1). */
export function assertBrowserWhenRequired() {
  if (process.env.TORA_REQUIRE_BROWSER === "1") assert.equal(browserMissing, "", `browser test cannot run: ${browserMissing}`);
}

/** A fresh persistent profile under /tmp; returns {page, close}. Page errors fail the test. */
export async function launch(viewport) {
  const profile = mkdtempSync("/tmp/tora-chromium-profile-");
  const context = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, headless: true, args: FLAGS, viewport });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    page,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Page coordinates of a point in trajectory-canvas pixels, read from the editor canvas' current box. */
export async function canvasPoint(page, x, y, width = 720, height = 480) {
  const box = await page.locator(".tora-ed canvas").boundingBox();
  return [box.x + (x / width) * box.width, box.y + (y / height) * box.height];
}

export async function dragCanvas(page, from, to) {
  await page.mouse.move(...(await canvasPoint(page, ...from)));
  await page.mouse.down();
  await page.mouse.move(...(await canvasPoint(page, ...to)), { steps: 8 });
  await page.mouse.up();
}

/** Mouse positions land on whole CSS pixels, about one canvas pixel here. */
export function assertNear(actual, expected, label, tol = 1.5) {
  assert.equal(actual.length, expected.length, `${label}: point count`);
  actual.forEach((p, i) => {
    assert.ok(Math.hypot(p[0] - expected[i][0], p[1] - expected[i][1]) < tol, `${label} point ${i}: ${p} vs ${expected[i]}`);
  });
}
