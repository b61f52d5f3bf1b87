"""Per-frame positions -> Tora's flow video: sparse displacements, Gaussian spreading, colour coding.

Source: tora_spec.md §2.3–§2.6 (alibaba/Tora `sat/utils/flow_utils.py` process_traj/get_flow, blur kernel from
`sat/utils/traj_utils.py`; colour coding = torchvision `flow_to_image`, the Middlebury wheel).

- `render_flow(points [N_tracks, F, 2], height, width, sigma=10) -> float32 [F, H, W, 2]` (channel 0 = dx, 1 = dy):
  frame i+1 holds (x_{i+1} - x_i, y_{i+1} - y_i) at the pixel of the PREVIOUS position (row int(y_i), column
  int(x_i), the far edge x == W / y == H mapped to the last pixel), frame 0 is zero, later tracks overwrite
  earlier ones on the same pixel. Every frame is then spread with the 99×99, σ = 10 Gaussian whose centre is 1,
  exactly as OpenCV `filter2D` with reflect-101 borders — but computed by splatting the kernel around the few
  non-zero pixels instead of convolving whole frames. Another `sigma` (a model trained at another pixel scale, e.g.
  the tiny Tora, names its own in `ToraConfig.flow_sigma`) scales the kernel's radius with it (49 px at σ = 10).
- `flow_to_rgb(flow [F, H, W, 2]) -> uint8 [F, H, W, 3]`: one global maximum norm over all frames, 55-colour wheel,
  white where the flow is zero (bit-identical to torchvision's algorithm; torch ops in the same order).
- `flow_video_to_vae_input(rgb) -> [1, 3, F, H, W]` in [-1, 1] (SAT: img / 255 * 2 - 1).

Why splatting is exact: the kernel is separable, K(dy, dx) = g(dy) g(dx) with g(d) = exp(-d²/(2σ²)), and
reflect-101 padding is separable too, so filter2D's output for a single source pixel s is the outer product of
two 1-D "folded" kernels: fold_n(s)[p] = Σ_{|d| <= 49, reflect(p + d) = s} g(d). A folded kernel is zero
further than 49 pixels from s (reflection never increases distances), so each source touches at most a 99×99
window; sources add linearly.
"""

import numpy as np
import torch
from einops import rearrange

from .errors import TrajectoryFormatError

KERNEL_SIZE = 99
SIGMA = 10.0
_RADIUS = KERNEL_SIZE // 2


def kernel_radius(sigma: float) -> int:
    """Half-width of the spreading kernel: 49 at the release's σ = 10, in proportion for another σ (at least 1)."""
    if not (np.isfinite(sigma) and sigma > 0):
        raise TrajectoryFormatError(
            f"the flow spreading sigma must be a positive number of pixels, got {sigma}"
        )
    return max(1, round(_RADIUS * sigma / SIGMA))


def _gaussian_1d(sigma: float) -> np.ndarray:
    """g(d) for d = -r..r: the 1-D factor of the centre-normalised 2-D kernel (spec §2.4; r = 49 at σ = 10)."""
    radius = kernel_radius(sigma)
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.exp(-0.5 * d * d / (sigma * sigma))  # [2r + 1]


def reflect101(index: np.ndarray, length: int) -> np.ndarray:
    """OpenCV BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba), repeated for offsets beyond one reflection."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def folded_kernels(length: int, sigma: float = SIGMA) -> np.ndarray:
    """[length, 2r + 1] float64: row s = fold_length(s)[p] for p = s - r .. s + r (zero outside [0, length)).

    r = `kernel_radius(sigma)`: [length, 99] at σ = 10.
    """
    g = _gaussian_1d(sigma)
    radius = g.size // 2
    p = np.arange(length)[:, None]  # [L, 1] output pixel
    offsets = np.arange(-radius, radius + 1)[None, :]  # [1, 2r + 1]
    source = reflect101(p + offsets, length)  # [L, 2r + 1] source pixel read by output p at offset d
    band = np.zeros((length, g.size), dtype=np.float64)
    weights = np.broadcast_to(g[None, :], source.shape)
    np.add.at(band, (source.ravel(), (p - source + radius).ravel()), weights.ravel())
    return band


def _check_points(points: np.ndarray, height: int, width: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[2] != 2:
        raise TrajectoryFormatError(f"points must have shape [N_tracks, F, 2], got {points.shape}")
    for axis, name, limit in ((0, "x", width), (1, "y", height)):
        values = points[..., axis]
        bad = ~(np.isfinite(values) & (values >= 0) & (values <= limit))
        if bad.any():
            track, frame = (int(i) for i in np.argwhere(bad)[0])
            raise TrajectoryFormatError(
                f"track {track}, frame {frame}, field '{name}': {float(values[track, frame])} is outside the frame "
                f"[0, {limit}]; resample the trajectory to this frame size ({width}x{height}) first"
            )
    return points


def sparse_displacements(points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, ...]:
    """The non-zero pixels of the raw displacement raster (before spreading), as flat arrays.

    Returns (frame, row, col, dx, dy): frame i+1 holds the move from frame i to i+1 at the frame-i pixel; when
    tracks share a pixel in a frame the later track wins (the reference writes them in order).
    """
    points = _check_points(points, height, width)  # [N, F, 2]
    n_tracks, n_frames, _ = points.shape
    if n_frames < 2 or n_tracks == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty.astype(np.float32), empty.astype(np.float32)
    prev, nxt = points[:, :-1], points[:, 1:]  # [N, F-1, 2]
    col = np.minimum(prev[..., 0].astype(np.int64), width - 1).ravel()  # [N*(F-1)], track-major
    row = np.minimum(prev[..., 1].astype(np.int64), height - 1).ravel()
    frame = np.broadcast_to(np.arange(1, n_frames), prev.shape[:2]).ravel()
    delta = (nxt - prev).astype(np.float32).reshape(-1, 2)  # [N*(F-1), 2] as the float32 raster stores it
    # Last writer wins: keep the last occurrence of each (frame, row, col) in track order.
    key = (frame * height + row) * width + col
    _, first_in_reversed = np.unique(key[::-1], return_index=True)
    keep = np.sort(key.size - 1 - first_in_reversed)
    keep = keep[(delta[keep] != 0).any(axis=1)]
    return frame[keep], row[keep], col[keep], delta[keep, 0], delta[keep, 1]


def render_flow(points: np.ndarray, height: int, width: int, sigma: float = SIGMA) -> np.ndarray:
    """Spread displacement raster [F, H, W, 2] float32 for per-frame positions [N_tracks, F, 2] (pixels)."""
    n_frames = np.asarray(points).shape[1] if np.ndim(points) == 3 else 0
    sparse = sparse_displacements(points, height, width)
    return spread_displacements(*sparse, n_frames=n_frames, height=height, width=width, sigma=sigma)


def spread_displacements(
    frame, row, col, dx, dy, n_frames: int, height: int, width: int, sigma: float = SIGMA
) -> np.ndarray:
    """Gaussian-spread a sparse raster (flat arrays, one entry per non-zero pixel) -> float32 [F, H, W, 2].

    Equal to running OpenCV filter2D (99×99 at σ = 10, centre 1, BORDER_REFLECT_101) on every frame of the dense
    raster; each frame's blobs are summed in float64 over their bounding box, then stored as float32.
    """
    flow = np.zeros((n_frames, height, width, 2), dtype=np.float32)  # [F, H, W, 2]
    if len(frame) == 0:
        return flow
    fold_y, fold_x = folded_kernels(height, sigma), folded_kernels(width, sigma)  # [H, 2r+1], [W, 2r+1]
    radius = fold_y.shape[1] // 2
    for f in np.unique(frame):
        sel = np.flatnonzero(frame == f)
        r0, r1 = max(int(row[sel].min()) - radius, 0), min(int(row[sel].max()) + radius + 1, height)
        c0, c1 = max(int(col[sel].min()) - radius, 0), min(int(col[sel].max()) + radius + 1, width)
        acc = np.zeros(
            (r1 - r0, c1 - c0, 2), dtype=np.float64
        )  # [h, w, 2] bounding box of this frame's blobs
        for k in sel:
            wy, (y0, y1) = _window(fold_y[row[k]], int(row[k]), height)
            wx, (x0, x1) = _window(fold_x[col[k]], int(col[k]), width)
            blob = wy[:, None] * wx[None, :]  # [h_k, w_k]
            acc[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0, 0] += blob * float(dx[k])
            acc[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0, 1] += blob * float(dy[k])
        flow[f, r0:r1, c0:c1] = acc
    return flow


def _window(band_row: np.ndarray, centre: int, length: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The in-frame part of a folded kernel (band row [2r + 1] for `centre`) and its pixel range."""
    radius = band_row.size // 2
    lo, hi = max(centre - radius, 0), min(centre + radius + 1, length)
    return band_row[lo - centre + radius : hi - centre + radius], (lo, hi)


def _colour_wheel(device: torch.device) -> torch.Tensor:
    """The 55-colour Middlebury wheel [55, 3] float32 (RY 15, YG 6, GC 4, CB 11, BM 13, MR 6; spec §2.5)."""
    ramps = []
    for n, channel, rising, full in ((15, 1, True, 0), (6, 0, False, 1), (4, 2, True, 1),
                                     (11, 1, False, 2), (13, 0, True, 2), (6, 2, False, 0)):  # fmt: skip
        seg = torch.zeros(n, 3)
        step = torch.floor(255 * torch.arange(0, n) / n)
        seg[:, channel] = step if rising else 255 - step
        seg[:, full] = 255
        ramps.append(seg)
    return torch.cat(ramps).to(device)  # [55, 3]


def _colours(flow: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    """uint8 [M, 3] colours of flow vectors [M, 2] (torchvision's op order, so results match bit for bit)."""
    wheel = _colour_wheel(flow.device)  # [55, 3]
    eps = torch.finfo(flow.dtype).eps
    unit = flow / (max_norm + eps)  # [M, 2]
    norm = torch.sum(unit**2, dim=1).sqrt()  # [M]
    angle = torch.atan2(-unit[:, 1], -unit[:, 0]) / torch.pi
    fk = (angle + 1) / 2 * (wheel.shape[0] - 1)
    k0 = torch.floor(fk).to(torch.long)
    k1 = k0 + 1
    k1[k1 == wheel.shape[0]] = 0
    frac = fk - k0
    out = torch.empty((flow.shape[0], 3), dtype=torch.uint8, device=flow.device)
    for c in range(3):
        col = (1 - frac) * (wheel[k0, c] / 255.0) + frac * (wheel[k1, c] / 255.0)
        out[:, c] = torch.floor(255 * (1 - norm * (1 - col)))
    return out  # [M, 3]


def _moving_pixels(vectors: torch.Tensor) -> torch.Tensor:
    """Flat indices of pixels [P, 2] whose flow is not bitwise (+0, +0), testing both floats as one int64.

    A -0.0 pixel is listed too; it is coloured white exactly like a zero pixel, so the result does not change.
    """
    if vectors.storage_offset() % 2:
        vectors = vectors.clone()
    return torch.nonzero(vectors.view(torch.int64).reshape(-1)).squeeze(1)  # [M]


def flow_to_rgb(flow: "np.ndarray | torch.Tensor") -> "np.ndarray | torch.Tensor":
    """Colour-code a flow video [F, H, W, 2] float32 -> uint8 [F, H, W, 3] (RGB); numpy in -> numpy out.

    One maximum norm over the whole clip (spec §2.5); zero flow is white. Only non-zero pixels are coloured,
    which is what makes this fast for Tora's sparse blobs; the result equals the dense computation exactly.
    """
    as_numpy = isinstance(flow, np.ndarray)
    flow_t = torch.from_numpy(np.ascontiguousarray(flow)) if as_numpy else flow.contiguous()
    if flow_t.dtype != torch.float32 or flow_t.ndim != 4 or flow_t.shape[-1] != 2:
        raise TrajectoryFormatError(
            f"flow must be float32 [F, H, W, 2], got {flow_t.dtype} {tuple(flow_t.shape)}"
        )
    vectors = flow_t.reshape(-1, 2)  # [P, 2] with P = F*H*W
    moving = _moving_pixels(vectors)  # [M]
    rgb = torch.full((vectors.shape[0], 3), 255, dtype=torch.uint8, device=flow_t.device)  # [P, 3]
    if moving.numel():
        picked = vectors.index_select(0, moving)  # [M, 2]
        max_norm = torch.sum(picked**2, dim=1).sqrt().max()
        rgb.index_copy_(0, moving, _colours(picked, max_norm))
    rgb = rgb.reshape(*flow_t.shape[:3], 3)  # [F, H, W, 3]
    return rgb.numpy() if as_numpy else rgb


def flow_video_to_vae_input(
    rgb: "np.ndarray | torch.Tensor",
    dtype: torch.dtype = torch.float32,
    device: "torch.device | str | None" = None,
) -> torch.Tensor:
    """uint8 RGB flow video [F, H, W, 3] -> VAE input [1, 3, F, H, W] in [-1, 1] (spec §2.6: img / 255 * 2 - 1)."""
    video = torch.from_numpy(np.ascontiguousarray(rgb)) if isinstance(rgb, np.ndarray) else rgb
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise TrajectoryFormatError(
            f"expected a uint8 RGB video [F, H, W, 3], got {video.dtype} {tuple(video.shape)}"
        )
    video = video.to(device=device if device is not None else video.device)
    scaled = video.to(torch.float32) / 255 * 2 - 1  # [F, H, W, 3]
    return rearrange(scaled, "f h w c -> 1 c f h w").to(dtype)
