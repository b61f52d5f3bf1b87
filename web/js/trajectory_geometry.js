// Trajectory geometry for the TrajectoryCanvas editor: DOM-free, so `node --test` can check it.
//
// Implements the contract shared with the Python side (tora_model/trajectory.py, tora_model/resample.py):
// JSON v1 validation/normalisation, the dense polyline of a track (control points for "linear", centripetal
// Catmull-Rom with 32 samples per segment for "smooth", each sample clamped to the canvas), arc-length
// resampling to per-frame positions with easing, hit testing, and the official Tora .txt format (integers
// "x,y" on a 256x256 canvas, one track). Error messages name "track i, point j, field 'x'" like Python's.
// Coordinates are canvas pixels (x right, y down, origin top-left) as float64; a position is [x, y].

export const TRAJECTORY_VERSION = 1;
export const SAMPLES_PER_SEGMENT = 32;
export const OFFICIAL_CANVAS = 256;
export const KINDS = ["path", "hold"];
export const INTERPOLATIONS = ["smooth", "linear"];
export const EASINGS = {
  linear: (u) => u,
  "ease-in": (u) => u * u,
  "ease-out": (u) => u * (2 - u),
  "ease-in-out": (u) => (u < 0.5 ? 2 * u * u : 1 - 2 * (1 - u) * (1 - u)),
};

const TOP_KEYS = ["version", "width", "height", "tracks"];
const TRACK_KEYS = ["kind", "points", "interpolation", "start_frame", "end_frame", "easing"];
const OPTIONAL_TRACK_KEYS = ["name", "color"];

export class TrajectoryFormatError extends Error {
  constructor(message) {
    super(message);
    this.name = "TrajectoryFormatError";
  }
}

// ---------------------------------------------------------------- JSON v1 validation

const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isInt = (v) => typeof v === "number" && Number.isInteger(v);

function checkKeys(obj, required, optional, where) {
  const missing = required.filter((k) => !(k in obj));
  if (missing.length) throw new TrajectoryFormatError(`${where}: missing key(s) ${missing.join(", ")}`);
  const unknown = Object.keys(obj).filter((k) => !required.includes(k) && !optional.includes(k));
  if (unknown.length) {
    throw new TrajectoryFormatError(
      `${where}: unknown key(s) ${unknown.join(", ")}; allowed: ${[...required, ...optional].join(", ")}`,
    );
  }
}

function checkPoint(p, width, height, where) {
  if (!Array.isArray(p) || p.length !== 2) {
    throw new TrajectoryFormatError(`${where}: expected [x, y], got ${JSON.stringify(p)}`);
  }
  const [x, y] = p;
  for (const [name, v, max, axis] of [["x", x, width, "width"], ["y", y, height, "height"]]) {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new TrajectoryFormatError(`${where}, field '${name}': expected a finite number, got ${JSON.stringify(v)}`);
    }
    if (v < 0 || v > max) {
      throw new TrajectoryFormatError(
        `${where}, field '${name}': ${v} is outside the canvas [0, ${max}] (canvas ${axis} ${max}); move the point inside the canvas`,
      );
    }
  }
  return [x, y];
}

function normaliseTrack(t, i, width, height, draft) {
  const where = `track ${i}`;
  const fail = (field, message) => new TrajectoryFormatError(`${where}, field '${field}': ${message}`);
  const got = (v) => `got ${JSON.stringify(v)}`;
  if (!isPlainObject(t)) throw new TrajectoryFormatError(`${where}: expected an object`);
  checkKeys(t, TRACK_KEYS, OPTIONAL_TRACK_KEYS, where);
  if (!KINDS.includes(t.kind)) throw fail("kind", `expected one of ${KINDS}, ${got(t.kind)}`);
  if (!Array.isArray(t.points)) throw fail("points", "expected a list of [x, y]");
  const points = t.points.map((p, j) => checkPoint(p, width, height, `${where}, point ${j}`));
  if (t.kind === "hold" && points.length !== 1) {
    throw fail("points", `a "hold" track needs exactly 1 point, got ${points.length}`);
  }
  if (t.kind === "path" && points.length < 2 && !draft) {
    throw fail("points", `a "path" track needs at least 2 points, got ${points.length}; use "hold" for one`);
  }
  if (!INTERPOLATIONS.includes(t.interpolation)) {
    throw fail("interpolation", `expected one of ${INTERPOLATIONS}, ${got(t.interpolation)}`);
  }
  if (!isInt(t.start_frame) || t.start_frame < 0) throw fail("start_frame", `expected an integer >= 0, ${got(t.start_frame)}`);
  if (t.end_frame !== null && (!isInt(t.end_frame) || t.end_frame <= t.start_frame)) {
    throw fail("end_frame", `expected null or an integer > start_frame (${t.start_frame}), ${got(t.end_frame)}`);
  }
  if (!Object.hasOwn(EASINGS, t.easing)) throw fail("easing", `expected one of ${Object.keys(EASINGS)}, ${got(t.easing)}`);
  const out = {
    kind: t.kind, points, interpolation: t.interpolation,
    start_frame: t.start_frame, end_frame: t.end_frame, easing: t.easing,
  };
  if ("name" in t) {
    if (typeof t.name !== "string") throw fail("name", `expected a string, ${got(t.name)}`);
    out.name = t.name;
  }
  if ("color" in t) {
    if (typeof t.color !== "string" || !/^#[0-9a-fA-F]{6}$/.test(t.color)) throw fail("color", `expected "#rrggbb", ${got(t.color)}`);
    out.color = t.color;
  }
  return out;
}

/**
 * Validate a parsed JSON v1 object and return a normalised deep copy (fixed key order).
 * `draft: true` (the editor's own state) also allows zero tracks and "path" tracks with fewer than 2 points.
 */
export function normaliseTrajectory(obj, { draft = false } = {}) {
  if (!isPlainObject(obj)) throw new TrajectoryFormatError("expected a JSON object with version, width, height, tracks");
  if (obj.version !== TRAJECTORY_VERSION) {
    throw new TrajectoryFormatError(`version: unsupported trajectory version ${JSON.stringify(obj.version)}; this editor reads version ${TRAJECTORY_VERSION}`);
  }
  checkKeys(obj, TOP_KEYS, [], "trajectory");
  for (const k of ["width", "height"]) {
    if (!isInt(obj[k]) || obj[k] <= 0) throw new TrajectoryFormatError(`${k}: expected a positive integer, got ${JSON.stringify(obj[k])}`);
  }
  if (!Array.isArray(obj.tracks)) throw new TrajectoryFormatError("tracks: expected a list");
  if (obj.tracks.length === 0 && !draft) throw new TrajectoryFormatError("tracks: at least one track is needed");
  const tracks = obj.tracks.map((t, i) => normaliseTrack(t, i, obj.width, obj.height, draft));
  return { version: TRAJECTORY_VERSION, width: obj.width, height: obj.height, tracks };
}

/** Parse JSON v1 text; throws TrajectoryFormatError for invalid JSON or an invalid trajectory. */
export function parseTrajectory(text, options = {}) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new TrajectoryFormatError(`not valid JSON (${err.message})`);
  }
  return normaliseTrajectory(obj, options);
}

export function serializeTrajectory(traj) {
  return JSON.stringify(normaliseTrajectory(traj, { draft: true }));
}

// ---------------------------------------------------------------- curves

/** Samples s = k/32, k = 0..32, of centripetal Catmull-Rom segment B->C with neighbours A, D. */
function catmullRomSegment(A, B, C, D) {
  const dist = (p, q) => Math.hypot(q[0] - p[0], q[1] - p[1]) ** 0.5;
  const samples = [];
  let dab = dist(A, B);
  const dbc = dist(B, C);
  let dcd = dist(C, D);
  if (dbc === 0) {
    for (let k = 0; k <= SAMPLES_PER_SEGMENT; k++) samples.push([B[0], B[1]]);
    return samples;
  }
  if (dab === 0) dab = dbc;
  if (dcd === 0) dcd = dbc;
  const mb = [0, 1].map((a) => ((B[a] - A[a]) / dab - (C[a] - A[a]) / (dab + dbc) + (C[a] - B[a]) / dbc) * dbc);
  const mc = [0, 1].map((a) => ((C[a] - B[a]) / dbc - (D[a] - B[a]) / (dbc + dcd) + (D[a] - C[a]) / dcd) * dbc);
  for (let k = 0; k <= SAMPLES_PER_SEGMENT; k++) {
    const s = k / SAMPLES_PER_SEGMENT;
    const s2 = s * s;
    const s3 = s2 * s;
    const h00 = 2 * s3 - 3 * s2 + 1;
    const h10 = s3 - 2 * s2 + s;
    const h01 = -2 * s3 + 3 * s2;
    const h11 = s3 - s2;
    samples.push([0, 1].map((a) => h00 * B[a] + h10 * mb[a] + h01 * C[a] + h11 * mc[a]));
  }
  return samples;
}

/**
 * Dense samples (s = 0..1 inclusive) of control segment i (points[i] -> points[i+1]). Smooth samples are
 * clamped to the width x height canvas: Catmull-Rom can overshoot its control points (contract change 1).
 */
export function segmentSamples(points, interpolation, i, width, height) {
  const B = points[i];
  const C = points[i + 1];
  if (interpolation === "linear") return [B, C].map((p) => [p[0], p[1]]);
  const n = points.length;
  const A = i > 0 ? points[i - 1] : [2 * B[0] - C[0], 2 * B[1] - C[1]];
  const D = i + 2 < n ? points[i + 2] : [2 * C[0] - B[0], 2 * C[1] - B[1]];
  const clamp = (v, max) => Math.min(Math.max(v, 0), max);
  return catmullRomSegment(A, B, C, D).map(([x, y]) => [clamp(x, width), clamp(y, height)]);
}

/** The curve exactly as it is sampled: an array of [x, y] (joints between segments not repeated). */
export function densePolyline(points, interpolation, width, height) {
  if (points.length < 2) return points.map((p) => [p[0], p[1]]);
  if (interpolation === "linear") return points.map((p) => [p[0], p[1]]);
  const out = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const seg = segmentSamples(points, interpolation, i, width, height);
    out.push(...(i === 0 ? seg : seg.slice(1)));
  }
  return out;
}

export function cumulativeLengths(poly) {
  const cum = [0];
  for (let j = 1; j < poly.length; j++) {
    cum.push(cum[j - 1] + Math.hypot(poly[j][0] - poly[j - 1][0], poly[j][1] - poly[j - 1][1]));
  }
  return cum;
}

/** Point at arc length `target` along `poly` (cum from cumulativeLengths). */
export function pointAtLength(poly, cum, target) {
  const L = cum[cum.length - 1];
  if (L === 0) return [poly[0][0], poly[0][1]];
  if (target >= L) {
    const last = poly[poly.length - 1];
    return [last[0], last[1]];
  }
  for (let j = 0; j + 1 < poly.length; j++) {
    const len = cum[j + 1] - cum[j];
    if (len === 0) continue;
    if (cum[j] <= target && target <= cum[j + 1]) {
      const t = (target - cum[j]) / len;
      return [0, 1].map((a) => poly[j][a] + t * (poly[j + 1][a] - poly[j][a]));
    }
  }
  return [poly[0][0], poly[0][1]]; // target < 0 cannot happen (easing maps [0,1] into [0,1])
}

/** Timing fraction u for frame f of a track (contract: "Per-frame positions"). */
export function frameFraction(f, startFrame, endFrame) {
  if (f <= startFrame) return 0;
  if (f >= endFrame) return 1;
  return (f - startFrame) / (endFrame - startFrame);
}

function checkFrames(numFrames) {
  if (!isInt(numFrames) || numFrames < 1) {
    throw new TrajectoryFormatError(`frames: expected a positive integer, got ${JSON.stringify(numFrames)}`);
  }
}

/** Last frame of a track's motion, refusing timings the frame count cannot hold (as Python does). */
function motionEnd(track, numFrames, index) {
  if (track.kind === "hold") return numFrames - 1;
  if (track.end_frame !== null && track.end_frame >= numFrames) {
    throw new TrajectoryFormatError(
      `track ${index}, field 'end_frame': ${track.end_frame} must be < frames (${numFrames}); lower end_frame or generate more frames`,
    );
  }
  const end = track.end_frame === null ? numFrames - 1 : track.end_frame;
  if (track.start_frame >= end) {
    throw new TrajectoryFormatError(
      `track ${index}, field 'start_frame': ${track.start_frame} must be < the last frame of the motion (${end}) for frames ${numFrames}; lower start_frame or generate more frames`,
    );
  }
  return end;
}

/** Per-frame positions [F][2] of one track on a width x height canvas; a draft path of 1 point stays put. */
export function trackPositions(track, numFrames, width, height, index = 0) {
  checkFrames(numFrames);
  const end = motionEnd(track, numFrames, index);
  if (track.points.length === 0) return [];
  const poly = track.kind === "hold" ? [track.points[0]] : densePolyline(track.points, track.interpolation, width, height);
  const cum = cumulativeLengths(poly);
  const L = cum[cum.length - 1];
  const ease = EASINGS[track.easing];
  const out = [];
  for (let f = 0; f < numFrames; f++) {
    out.push(pointAtLength(poly, cum, ease(frameFraction(f, track.start_frame, end)) * L));
  }
  return out;
}

/**
 * [N_tracks][F][2] canvas-pixel positions: the JS twin of tora_model.resample.canvas_positions, so it also
 * requires CogVideoX's F = 4k+1 frames (k >= 1).
 */
export function resampleTrajectory(traj, numFrames) {
  const t = normaliseTrajectory(traj);
  if (!isInt(numFrames) || numFrames < 5 || (numFrames - 1) % 4 !== 0) {
    throw new TrajectoryFormatError(`frames must be 4k+1 with k >= 1 (5, 9, ..., 49, ...), got ${JSON.stringify(numFrames)}`);
  }
  return t.tracks.map((track, i) => trackPositions(track, numFrames, t.width, t.height, i));
}

// ---------------------------------------------------------------- hit testing

export function distanceToSegment(p, a, b) {
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const len2 = dx * dx + dy * dy;
  const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2));
  const q = [a[0] + t * dx, a[1] + t * dy];
  return { distance: Math.hypot(p[0] - q[0], p[1] - q[1]), point: q };
}

/** Index of the point of `points` nearest to p within `radius`, or -1. */
export function hitPoint(points, p, radius) {
  let best = -1;
  let bestD = radius;
  points.forEach((q, i) => {
    const d = Math.hypot(q[0] - p[0], q[1] - p[1]);
    if (d <= bestD) {
      best = i;
      bestD = d;
    }
  });
  return best;
}

/** Nearest control segment of a path's (clamped) curve within `radius`: {segment, distance, point} or null. */
export function hitCurve(points, interpolation, width, height, p, radius) {
  let best = null;
  for (let i = 0; i + 1 < points.length; i++) {
    const samples = segmentSamples(points, interpolation, i, width, height);
    for (let j = 0; j + 1 < samples.length; j++) {
      const h = distanceToSegment(p, samples[j], samples[j + 1]);
      if (h.distance <= radius && (best === null || h.distance < best.distance)) best = { segment: i, ...h };
    }
  }
  return best;
}

// ---------------------------------------------------------------- official .txt (256 canvas)

/** Parse an official Tora .txt (one "x,y" integer pair per line on the 256 canvas) into a track. */
export function parseOfficialTxt(text, width, height) {
  const body = text.replace(/\r\n?/g, "\n").replace(/\n+$/, "");
  if (body.trim() === "") throw new TrajectoryFormatError("the file holds no points");
  const lines = body.split("\n");
  const points = lines.map((line, i) => {
    const m = /^\s*(-?\d+)\s*,\s*(-?\d+)\s*$/.exec(line);
    if (!m) throw new TrajectoryFormatError(`line ${i + 1}: expected "x,y" integers, got ${JSON.stringify(line)}`);
    const [x, y] = [Number(m[1]), Number(m[2])];
    for (const [name, v] of [["x", x], ["y", y]]) {
      if (v < 0 || v >= OFFICIAL_CANVAS) {
        throw new TrajectoryFormatError(`line ${i + 1}: ${name}=${v} is outside the official 256 canvas [0, 255]`);
      }
    }
    return [(x * width) / OFFICIAL_CANVAS, (y * height) / OFFICIAL_CANVAS];
  });
  const kind = points.length === 1 ? "hold" : "path";
  return { kind, points, interpolation: "linear", start_frame: 0, end_frame: null, easing: "linear" };
}

/**
 * Export one track as official .txt: its per-frame positions (one line per frame, which the official
 * pipeline uses unchanged when frames = 49) rounded on the 256 canvas. The canvas edge (x = width)
 * rounds to 256, which the official code cannot index; such values are written as 255 and counted in
 * `edgeClamped` so the caller can tell the user.
 */
export function exportOfficialTxt(track, numFrames, width, height) {
  let edgeClamped = 0;
  const scale = (v, size) => {
    const r = Math.round((v * OFFICIAL_CANVAS) / size);
    if (r < OFFICIAL_CANVAS) return r;
    edgeClamped++;
    return OFFICIAL_CANVAS - 1;
  };
  const lines = trackPositions(track, numFrames, width, height).map(([x, y]) => `${scale(x, width)},${scale(y, height)}`);
  return { text: `${lines.join("\n")}\n`, edgeClamped };
}
