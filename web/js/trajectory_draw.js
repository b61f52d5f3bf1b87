// Painting of the TrajectoryCanvas editor: background, each track's curve exactly as it is sampled
// (trajectory_geometry.densePolyline), control points, the per-frame sample positions of the selected
// track and one dot per track at the current frame. Takes a 2D context already scaled so that one unit
// is one trajectory-canvas pixel; `px` is the size of one CSS pixel in those units.

import { densePolyline } from "./trajectory_geometry.js";

function drawGrid(ctx, w, h, px) {
  ctx.fillStyle = "#1b1d21";
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "rgba(255,255,255,0.07)";
  ctx.lineWidth = px;
  const step = Math.max(w, h) / 16;
  ctx.beginPath();
  for (let x = step; x < w; x += step) ctx.moveTo(x, 0), ctx.lineTo(x, h);
  for (let y = step; y < h; y += step) ctx.moveTo(0, y), ctx.lineTo(w, y);
  ctx.stroke();
}

function dot(ctx, [x, y], r, fill, stroke, lineWidth) {
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fillStyle = fill;
  ctx.fill();
  if (stroke) {
    ctx.strokeStyle = stroke;
    ctx.lineWidth = lineWidth;
    ctx.stroke();
  }
}

function arrowHead(ctx, poly, color, px) {
  const n = poly.length;
  if (n < 2) return;
  const [x1, y1] = poly[n - 1];
  let k = n - 2;
  while (k > 0 && poly[k][0] === x1 && poly[k][1] === y1) k--;
  if (poly[k][0] === x1 && poly[k][1] === y1) return;
  const a = Math.atan2(y1 - poly[k][1], x1 - poly[k][0]);
  const s = 12 * px;
  ctx.beginPath();
  ctx.moveTo(x1, y1);
  ctx.lineTo(x1 - s * Math.cos(a - 0.45), y1 - s * Math.sin(a - 0.45));
  ctx.lineTo(x1 - s * Math.cos(a + 0.45), y1 - s * Math.sin(a + 0.45));
  ctx.closePath();
  ctx.fillStyle = color;
  ctx.fill();
}

function drawTrack(ctx, track, { selected, selectedPoint, px, width, height }) {
  const color = track.color ?? "#ffffff";
  if (track.kind === "hold") {
    const [x, y] = track.points[0];
    const r = (selected ? 8 : 6) * px;
    ctx.fillStyle = color;
    ctx.strokeStyle = selected ? "#ffffff" : "#000000";
    ctx.lineWidth = 2 * px;
    ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
    ctx.strokeRect(x - r, y - r, 2 * r, 2 * r);
    return;
  }
  const poly = densePolyline(track.points, track.interpolation, width, height);
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = (selected ? 3 : 2) * px;
  ctx.globalAlpha = selected ? 1 : 0.75;
  if (track.points.length < 2) ctx.setLineDash([6 * px, 4 * px]);
  ctx.beginPath();
  poly.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
  ctx.stroke();
  arrowHead(ctx, poly, color, px);
  ctx.restore();
  track.points.forEach((p, i) => {
    const r = (selected ? 5 : 3.5) * px;
    const ring = selected && i === selectedPoint ? "#ffffff" : "#000000";
    dot(ctx, p, i === 0 ? r * 1.4 : r, i === 0 ? "#ffffff" : color, ring, (i === selectedPoint ? 2.5 : 1) * px);
  });
}

/**
 * Paint the whole editor. `view` = {traj, selected, selectedPoint, background (Image|null),
 * positions (per track [F][2] or null), frame, px}.
 */
export function drawEditor(ctx, view) {
  const { traj, selected, selectedPoint, background, positions, frame, px } = view;
  const { width: w, height: h } = traj;
  if (background) {
    ctx.drawImage(background, 0, 0, w, h);
  } else {
    drawGrid(ctx, w, h, px);
  }
  const style = { px, width: w, height: h };
  traj.tracks.forEach((t, i) => i !== selected && drawTrack(ctx, t, { ...style, selected: false, selectedPoint: -1 }));
  if (traj.tracks[selected]) drawTrack(ctx, traj.tracks[selected], { ...style, selected: true, selectedPoint });
  const samples = positions?.[selected];
  if (samples && traj.tracks[selected].kind === "path") {
    for (const p of samples) dot(ctx, p, 1.6 * px, "rgba(255,255,255,0.8)", null, 0);
  }
  positions?.forEach((track, i) => {
    const p = track?.[frame];
    if (p) dot(ctx, p, 7 * px, traj.tracks[i].color ?? "#ffffff", "#000000", 2 * px);
  });
}
