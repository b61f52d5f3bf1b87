// Unit tests of web/js/trajectory_geometry.js (run: node --test tests/js/), plus the resampling vectors
// shared with the Python side (tests/fixtures/resample_vectors.json) matched within 1e-6 px.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import {
  EASINGS,
  SAMPLES_PER_SEGMENT,
  TrajectoryFormatError,
  cumulativeLengths,
  densePolyline,
  exportOfficialTxt,
  hitCurve,
  hitPoint,
  normaliseTrajectory,
  parseOfficialTxt,
  parseTrajectory,
  resampleTrajectory,
  serializeTrajectory,
  trackPositions,
} from "../../web/js/trajectory_geometry.js";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..");
const shared = join(repo, "..", "shared");

const path = (points, extra = {}) => ({
  kind: "path",
  points,
  interpolation: "linear",
  start_frame: 0,
  end_frame: null,
  easing: "linear",
  ...extra,
});
const traj = (tracks, width = 720, height = 480) => ({ version: 1, width, height, tracks });

function assertClose(actual, expected, tol, label) {
  assert.equal(actual.length, expected.length, `${label}: length`);
  actual.forEach((v, i) => {
    if (Array.isArray(v)) assertClose(v, expected[i], tol, `${label}[${i}]`);
    else assert.ok(Math.abs(v - expected[i]) <= tol, `${label}[${i}]: ${v} vs ${expected[i]}`);
  });
}

test("easing curves match the contract formulas", () => {
  assert.equal(EASINGS.linear(0.3), 0.3);
  assert.equal(EASINGS["ease-in"](0.5), 0.25);
  assert.equal(EASINGS["ease-out"](0.5), 0.75);
  assert.equal(EASINGS["ease-in-out"](0.25), 0.125);
  assert.equal(EASINGS["ease-in-out"](0.75), 0.875);
  for (const e of Object.values(EASINGS)) assert.deepEqual([e(0), e(1)], [0, 1]);
});

test("linear path moves at constant speed along its arc length", () => {
  // Two legs of 100 and 300 px: frame k of 5 sits at 100*k px along the path.
  const t = path([[0, 0], [100, 0], [100, 300]]);
  assertClose(trackPositions(t, 5, 720, 480), [[0, 0], [100, 0], [100, 100], [100, 200], [100, 300]], 1e-12, "pos");
});

test("smooth curve passes through every control point, 32 samples per segment", () => {
  const pts = [[10, 10], [200, 50], [300, 400], [600, 100]];
  const poly = densePolyline(pts, "smooth", 720, 480);
  assert.equal(poly.length, 1 + SAMPLES_PER_SEGMENT * (pts.length - 1));
  pts.forEach((p, i) => assertClose(poly[i * SAMPLES_PER_SEGMENT], p, 1e-9, `joint ${i}`));
});

test("smooth curve through evenly spaced collinear points is the straight line", () => {
  const poly = densePolyline([[0, 10], [10, 10], [20, 10]], "smooth", 720, 480);
  poly.forEach(([x, y], k) => {
    assert.ok(Math.abs(y - 10) < 1e-12);
    assert.ok(Math.abs(x - (10 * k) / SAMPLES_PER_SEGMENT) < 1e-9, `sample ${k}: ${x}`);
  });
});

test("centripetal tangent: hand-computed midpoint of a right-angle corner", () => {
  // Segment B=(200,200) -> C=(300,200) of [B, C, D=(300,300)]; phantom A=(100,200); d_ab=d_bc=d_cd=10.
  // m_b = ((B-A)/10 - (C-A)/20 + (C-B)/10) * 10 = (100, 0)
  // m_c = ((C-B)/10 - (D-B)/20 + (D-C)/10) * 10 = ((10,0) - (5,5) + (0,10)) * 10 = (50, 50)
  // p(0.5) = 0.5*B + 0.125*m_b + 0.5*C - 0.125*m_c = (250 + 12.5 - 6.25, 200 - 6.25)
  const poly = densePolyline([[200, 200], [300, 200], [300, 300]], "smooth", 720, 480);
  assertClose(poly[16], [256.25, 193.75], 1e-9, "p(0.5)");
});

test("smooth samples that overshoot the canvas are clamped to it (contract change 1)", () => {
  // The same corner at the top border dips to y = -6.25 before clamping.
  const poly = densePolyline([[0, 0], [100, 0], [100, 100]], "smooth", 720, 480);
  assertClose(poly[16], [56.25, 0], 1e-9, "p(0.5)");
  assert.ok(poly.every(([x, y]) => x >= 0 && x <= 720 && y >= 0 && y <= 480));
  const pos = trackPositions(path([[0, 0], [100, 0], [100, 100]], { interpolation: "smooth" }), 49, 720, 480);
  assert.ok(pos.every(([x, y]) => x >= 0 && y >= 0));
});

test("repeated control point gives a constant segment and no NaN", () => {
  const poly = densePolyline([[5, 5], [5, 5], [50, 5]], "smooth", 720, 480);
  for (let k = 0; k <= SAMPLES_PER_SEGMENT; k++) assert.deepEqual(poly[k], [5, 5]);
  assert.ok(poly.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const pos = trackPositions(path([[5, 5], [5, 5], [50, 5]], { interpolation: "smooth" }), 9, 720, 480);
  assertClose(pos[0], [5, 5], 0, "first");
  assertClose(pos[8], [50, 5], 0, "last");
});

test("zero-length path stays on its first point", () => {
  const pos = trackPositions(path([[7, 8], [7, 8]], { interpolation: "smooth" }), 5, 720, 480);
  assert.deepEqual(pos, Array(5).fill([7, 8]));
});

test("start/end frames and easing shape the timing", () => {
  const t = path([[0, 0], [100, 0]], { start_frame: 2, end_frame: 6, easing: "ease-in" });
  const xs = trackPositions(t, 9, 720, 480).map((p) => p[0]);
  assertClose(xs, [0, 0, 0, 6.25, 25, 56.25, 100, 100, 100], 1e-12, "x");
});

test("hold track stays on its point for every frame", () => {
  const t = { ...path([[30, 40]]), kind: "hold" };
  assert.deepEqual(trackPositions(t, 4, 720, 480), Array(4).fill([30, 40]));
});

test("timing the frame count cannot hold is an error naming the field and both numbers", () => {
  const t = traj([path([[0, 0], [1, 1]], { end_frame: 49 })]);
  assert.throws(() => resampleTrajectory(t, 49), /track 0, field 'end_frame': 49 must be < frames \(49\)/);
  assert.equal(resampleTrajectory(t, 53)[0].length, 53);
  const late = traj([path([[0, 0], [1, 1]]), path([[0, 0], [1, 1]], { start_frame: 48 })]);
  assert.throws(() => resampleTrajectory(late, 49), /track 1, field 'start_frame': 48 must be < the last frame of the motion \(48\)/);
  // A hold point has no motion, so its timing fields are not checked against the frame count.
  assert.equal(resampleTrajectory(traj([{ ...path([[3, 4]], { start_frame: 60 }), kind: "hold" }]), 5)[0].length, 5);
  assert.throws(() => resampleTrajectory(t, 50), /frames must be 4k\+1/);
});

test("cumulative lengths sum segment lengths", () => {
  assert.deepEqual(cumulativeLengths([[0, 0], [3, 4], [3, 4], [3, 10]]), [0, 5, 5, 11]);
});

test("validation: version, strict keys, ranges, kinds", () => {
  const bad = [
    [{ ...traj([path([[0, 0], [1, 1]])]), version: 2 }, /version: unsupported trajectory version 2; this editor reads version 1/],
    [{ ...traj([path([[0, 0], [1, 1]])]), extra: 1 }, /unknown key\(s\) extra/],
    [traj([{ ...path([[0, 0], [1, 1]]), speed: 2 }]), /track 0: unknown key\(s\) speed/],
    [traj([path([[0, 0], [1, 1]]), path([[0, 0], [721, 3]])]), /track 1, point 1, field 'x': 721 is outside the canvas \[0, 720\]/],
    [traj([path([[0, 0], [1, -1]])]), /track 0, point 1, field 'y': -1 is outside/],
    [traj([path([[0, 0], [Number.NaN, 1]])]), /finite number/],
    [traj([path([[0, 0]])]), /track 0, field 'points': a "path" track needs at least 2 points, got 1/],
    [traj([{ ...path([[0, 0], [1, 1]]), kind: "hold" }]), /field 'points': a "hold" track needs exactly 1 point, got 2/],
    [traj([]), /at least one track/],
    [traj([path([[0, 0], [1, 1]], { end_frame: 0 })]), /field 'end_frame': expected null or an integer > start_frame/],
    [traj([path([[0, 0], [1, 1]], { easing: "bounce" })]), /field 'easing': expected one of/],
    [traj([path([[0, 0], [1, 1]], { easing: "constructor" })]), /field 'easing': expected one of/],
    [traj([path([[0, 0], [1, 1]], { color: "red" })]), /field 'color': expected "#rrggbb"/],
    [{ ...traj([path([[0, 0], [1, 1]])]), width: 0 }, /width: expected a positive integer/],
  ];
  for (const [obj, re] of bad) assert.throws(() => normaliseTrajectory(obj), (e) => e instanceof TrajectoryFormatError && re.test(e.message));
  assert.throws(() => parseTrajectory("{nope"), /not valid JSON/);
});

test("draft mode accepts an editor's unfinished state only", () => {
  assert.equal(normaliseTrajectory(traj([]), { draft: true }).tracks.length, 0);
  assert.equal(normaliseTrajectory(traj([path([[1, 1]])]), { draft: true }).tracks[0].points.length, 1);
  assert.throws(() => normaliseTrajectory(traj([path([[1, 900]])]), { draft: true }), /outside/);
});

test("serialize -> parse -> serialize round-trips exactly, UI keys kept", () => {
  const t = traj([
    path([[0.1, 0.2], [719.999, 480]], { interpolation: "smooth", name: "car", color: "#12abEF", end_frame: 40, easing: "ease-out" }),
    { ...path([[360, 240]]), kind: "hold" },
  ]);
  const text = serializeTrajectory(t);
  assert.deepEqual(parseTrajectory(text), t);
  assert.equal(serializeTrajectory(parseTrajectory(text)), text);
});

test("official .txt import scales the 256 canvas to the editor canvas", () => {
  const t = parseOfficialTxt("0,0\n128, 64\r\n255,255\n\n", 720, 480);
  assert.equal(t.kind, "path");
  assert.deepEqual(t.points, [[0, 0], [360, 120], [717.1875, 478.125]]);
  assert.equal(parseOfficialTxt("10,20", 256, 256).kind, "hold");
  assert.throws(() => parseOfficialTxt("1,2\n\n3,4", 720, 480), /line 2: expected "x,y" integers/);
  assert.throws(() => parseOfficialTxt("1,256", 720, 480), /line 1: y=256 is outside the official 256 canvas/);
  assert.throws(() => parseOfficialTxt("1.5,2", 720, 480), /line 1/);
  assert.throws(() => parseOfficialTxt("\n", 720, 480), /no points/);
});

test("official .txt export writes per-frame positions and reports the clamped edge", () => {
  const { text, edgeClamped } = exportOfficialTxt(path([[0, 0], [720, 480]]), 5, 720, 480);
  assert.equal(text, "0,0\n64,64\n128,128\n192,192\n255,255\n");
  assert.equal(edgeClamped, 2);
  const again = parseOfficialTxt(text, 720, 480);
  assert.equal(again.points.length, 5);
});

test("official example files import (shared reference trajs)", { skip: !existsSync(join(shared, "reference", "trajs")) && "../shared/reference/trajs absent" }, () => {
  const t = parseOfficialTxt(readFileSync(join(shared, "reference", "trajs", "circle.txt"), "utf8"), 720, 480);
  assert.equal(t.points.length, 22);
  assert.deepEqual(t.points[0], [(120 * 720) / 256, (194 * 480) / 256]);
  // Integer 256-canvas points survive import -> linear export at one frame per point.
  const back = exportOfficialTxt({ ...t, points: t.points.slice(0, 2) }, 2, 720, 480).text;
  assert.equal(back, "120,194\n144,193\n");
});

test("hit testing finds points and the control segment under the cursor", () => {
  const pts = [[0, 0], [100, 0], [100, 100]];
  assert.equal(hitPoint(pts, [98, 3], 6), 1);
  assert.equal(hitPoint(pts, [50, 50], 6), -1);
  assert.equal(hitCurve(pts, "linear", 720, 480, [50, 2], 5).segment, 0);
  assert.equal(hitCurve(pts, "linear", 720, 480, [102, 60], 5).segment, 1);
  assert.equal(hitCurve(pts, "linear", 720, 480, [50, 50], 5), null);
  // The smooth corner bulges out: its midpoint (256.25, 193.75) is on the curve, not on the chord.
  const corner = [[200, 200], [300, 200], [300, 300]];
  assert.equal(hitCurve(corner, "smooth", 720, 480, [256.25, 193.75], 0.5).segment, 0);
  assert.equal(hitCurve(corner, "linear", 720, 480, [256.25, 193.75], 0.5), null);
});

const vectorsPath = join(repo, "tests", "fixtures", "resample_vectors.json");
const vectors = existsSync(vectorsPath) ? JSON.parse(readFileSync(vectorsPath, "utf8")) : null;
const noVectors = !vectors && "tests/fixtures/resample_vectors.json not written yet";

test("shared resample vectors (Python side): positions and polylines within tolerance", { skip: noVectors }, () => {
  assert.ok(vectors.tolerance_px <= 1e-6);
  assert.ok(vectors.cases.length >= 10);
  for (const c of vectors.cases) {
    const { width, height, tracks } = c.trajectory;
    assertClose(resampleTrajectory(c.trajectory, c.num_frames), c.positions, vectors.tolerance_px, c.name);
    tracks.forEach((t, i) => {
      const poly = t.kind === "hold" ? t.points : densePolyline(t.points, t.interpolation, width, height);
      assertClose(poly, c.polylines[i], vectors.tolerance_px, `${c.name} polyline ${i}`);
    });
  }
});

test("shared error vectors (Python side) are refused with the same field named", { skip: noVectors }, () => {
  assert.ok(vectors.error_cases.length > 0);
  for (const c of vectors.error_cases) {
    assert.throws(
      () => resampleTrajectory(c.trajectory, c.num_frames),
      (e) => e instanceof TrajectoryFormatError && e.message.includes(c.match),
      `${c.name}: expected an error containing ${JSON.stringify(c.match)}`,
    );
  }
});
