// Layout checks of a workflow as the frontend draws it, on plain numbers (no DOM): the browser tier reads each
// node's box and each link's end points from the live graph and asks these two questions.
//   box:  {id, type, x, y, w, h} in graph units, title bar and source badge included (LiteGraph draws the badge
//         above the title, so the box starts BADGE_HEIGHT above getBounding()).
//   link: {id, from, to, a: [x, y], b: [x, y]} from an output slot to an input slot.

/** Badge (20) + its gap (2) above the title bar, in the 1.2x-1.5x frontends. */
export const BADGE_HEIGHT = 22;

/** Pairs of boxes that overlap by more than `margin` graph units. */
export function overlappingBoxes(boxes, margin = 0) {
  const pairs = [];
  boxes.forEach((p, i) => {
    for (const q of boxes.slice(i + 1)) {
      const dx = Math.min(p.x + p.w, q.x + q.w) - Math.max(p.x, q.x);
      const dy = Math.min(p.y + p.h, q.y + q.h) - Math.max(p.y, q.y);
      if (dx > margin && dy > margin) pairs.push(`${p.type}#${p.id} / ${q.type}#${q.id}`);
    }
  });
  return pairs;
}

/** Points along a link as LiteGraph's spline draws it: a cubic from a to b, horizontal handles of 0.25 x length. */
export function linkPoints(a, b, steps = 48) {
  const handle = Math.max(30, 0.25 * Math.hypot(b[0] - a[0], b[1] - a[1]));
  const c1 = [a[0] + handle, a[1]];
  const c2 = [b[0] - handle, b[1]];
  return Array.from({ length: steps + 1 }, (_, i) => {
    const t = i / steps;
    const [u, v, w, z] = [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3];
    return [0, 1].map((k) => u * a[k] + v * c1[k] + w * c2[k] + z * b[k]);
  });
}

/** Links that pass behind a box other than their own two nodes' (`inset` keeps a wire grazing an edge allowed). */
export function linksBehind(links, boxes, inset = 4) {
  const hits = [];
  for (const link of links) {
    const points = linkPoints(link.a, link.b);
    for (const box of boxes) {
      if (box.id === link.from || box.id === link.to) continue;
      const inside = ([x, y]) => x > box.x + inset && x < box.x + box.w - inset && y > box.y + inset && y < box.y + box.h - inset;
      if (points.some(inside)) hits.push(`link ${link.id} (${link.from} -> ${link.to}) behind ${box.type}#${box.id}`);
    }
  }
  return hits;
}
