// The layout checks the real-frontend tier applies to the example workflows, on hand-made boxes and links.
import { test } from "node:test";
import assert from "node:assert/strict";

import { linkPoints, linksBehind, overlappingBoxes } from "./workflow_layout.mjs";

const box = (id, x, y, w, h) => ({ id, type: "N", x, y, w, h });

test("boxes that only touch do not overlap; a badge reaching into the node above does", () => {
  assert.deepEqual(overlappingBoxes([box("1", 0, 0, 100, 100), box("2", 100, 0, 100, 100), box("3", 0, 100, 100, 50)]), []);
  assert.deepEqual(overlappingBoxes([box("1", 0, 0, 100, 100), box("2", 50, 90, 100, 100)]), ["N#1 / N#2"]);
});

test("a link spline runs from end to end with horizontal handles", () => {
  const points = linkPoints([0, 0], [400, 200]);
  assert.deepEqual(points[0], [0, 0]);
  assert.deepEqual(points.at(-1), [400, 200]);
  assert.ok(points[1][0] > 0 && Math.abs(points[1][1]) < 1, "leaves the output horizontally");
  assert.ok(points.every(([x, y]) => x >= 0 && x <= 400 && y >= 0 && y <= 200));
});

test("a wire crossing a third node is reported, its own end nodes are not", () => {
  const boxes = [box("a", 0, 0, 100, 100), box("canvas", 200, -50, 100, 100), box("b", 400, 0, 100, 100)];
  const straight = { id: 1, from: "a", to: "b", a: [100, 10], b: [400, 10] };
  assert.deepEqual(linksBehind([straight], boxes), ["link 1 (a -> b) behind N#canvas"]);
  const below = { id: 2, from: "a", to: "b", a: [100, 90], b: [400, 90] };
  assert.deepEqual(linksBehind([below], boxes), []);
});
