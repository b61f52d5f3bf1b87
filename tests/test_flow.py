"""Flow video: rasterisation rules, splatting == OpenCV filter2D (reflect-101), colouring == torchvision's
algorithm, and the nine official trajectories against reference/fixtures/tora_reference_values.json (spec §2.3–2.6).
"""

import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from tests.references import official_blur_kernel
from tests.shared_data import FIXTURE, TRAJS, needs_shared
from tora_model.errors import TrajectoryFormatError
from tora_model.flow import (
    SIGMA,
    flow_to_rgb,
    flow_video_to_vae_input,
    kernel_radius,
    render_flow,
    sparse_displacements,
    spread_displacements,
)
from tora_model.resample import resample
from tora_model.trajectory import load_official_txt

NAMES = sorted(p.name for p in TRAJS.glob("*.txt")) if TRAJS.exists() else []


def _dense_reference(raw: np.ndarray) -> np.ndarray:
    """The reference spreading: cv2.filter2D (default reflect-101 border) on frames 1.. of a dense raster."""
    out = raw.copy()
    kernel = official_blur_kernel()
    for i in range(1, raw.shape[0]):
        out[i] = cv2.filter2D(raw[i], -1, kernel)
    return out


def _dense_rgb_reference(flow: np.ndarray) -> np.ndarray:
    """torchvision flow_to_image's algorithm on every pixel (layout [F, H, W, 2] -> [F, H, W, 3])."""
    wheel = []
    for n, ch, rising, full in (
        (15, 1, 1, 0),
        (6, 0, 0, 1),
        (4, 2, 1, 1),
        (11, 1, 0, 2),
        (13, 0, 1, 2),
        (6, 2, 0, 0),
    ):
        seg = torch.zeros(n, 3)
        step = torch.floor(255 * torch.arange(0, n) / n)
        seg[:, ch], seg[:, full] = (step if rising else 255 - step), 255
        wheel.append(seg)
    wheel = torch.cat(wheel)
    f = torch.from_numpy(flow).permute(0, 3, 1, 2)  # [F, 2, H, W]
    unit = f / (torch.sum(f**2, dim=1).sqrt().max() + torch.finfo(torch.float32).eps)
    norm = torch.sum(unit**2, dim=1).sqrt()
    fk = (torch.atan2(-unit[:, 1], -unit[:, 0]) / torch.pi + 1) / 2 * 54
    k0 = torch.floor(fk).to(torch.long)
    k1 = k0 + 1
    k1[k1 == 55] = 0
    frac = fk - k0
    img = torch.zeros((f.shape[0], 3, f.shape[2], f.shape[3]), dtype=torch.uint8)
    for c in range(3):
        col = (1 - frac) * (wheel[k0, c] / 255.0) + frac * (wheel[k1, c] / 255.0)
        img[:, c] = torch.floor(255 * (1 - norm * (1 - col)))
    return img.permute(0, 2, 3, 1).numpy()


def _raw_raster(points: np.ndarray, height: int, width: int) -> np.ndarray:
    frame, row, col, dx, dy = sparse_displacements(points, height, width)
    raw = np.zeros((points.shape[1], height, width, 2), dtype=np.float32)
    raw[frame, row, col, 0], raw[frame, row, col, 1] = dx, dy
    return raw


# ------------------------------------------------------------------------------------------------ official files


def _official_flow(name: str, num_frames: int = 49):
    points = resample(load_official_txt(TRAJS / name), num_frames, 720, 480)
    return points, render_flow(points, 480, 720)


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_official_flow_matches_reference_values(name):
    ref = json.loads(FIXTURE.read_text())["trajectories_480x720_49frames"][name]
    _, flow = _official_flow(name)
    rgb = flow_to_rgb(flow)
    assert flow.shape == (49, 480, 720, 2) and flow.dtype == np.float32 and not flow[0].any()
    assert float(np.hypot(flow[..., 0], flow[..., 1]).max()) == pytest.approx(
        ref["flow_global_max_norm"], abs=1e-5
    )
    assert float(flow.sum(dtype=np.float64)) == pytest.approx(ref["flow_sum"], rel=1e-6, abs=2e-3)
    del flow
    assert (rgb[0] == 255).all() == ref["frame0_is_white"]
    assert int(rgb.sum(dtype=np.int64)) == ref["flow_image_uint8_sum"]
    # The reference hashed torchvision's [F, 3, H, W] uint8 output.
    digest = hashlib.sha256(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)).tobytes()).hexdigest()
    assert digest == ref["flow_image_uint8_sha256"]


@needs_shared
def test_official_vae_input_mean():
    ref = json.loads(FIXTURE.read_text())["trajectories_480x720_49frames"]["wave.txt"]
    rgb = flow_to_rgb(_official_flow("wave.txt")[1])
    total = sum(
        flow_video_to_vae_input(rgb[i : i + 7]).to(torch.float64).sum().item() for i in range(0, 49, 7)
    )
    assert total / rgb.size == pytest.approx(ref["vae_input_mean"], abs=1e-9)


@needs_shared
def test_official_flow_equals_dense_opencv_pipeline():
    points, flow = _official_flow("sawtooth.txt", num_frames=13)  # 13 frames keep the dense reference cheap
    dense = _dense_reference(_raw_raster(points, 480, 720))
    assert np.abs(flow - dense).max() <= 1e-4
    assert np.abs(flow_to_rgb(flow).astype(np.int16) - _dense_rgb_reference(dense)).max() <= 1


# ------------------------------------------------------------------------------------------------ splatting


def _border_and_random_pixels(rng, height, width, count):
    pixels = {(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1)}
    pixels |= {(height // 2, 0), (0, width // 2), (height - 1, width // 2), (height // 2, width - 1)}
    pixels |= {
        (int(r), int(c))
        for r, c in zip(rng.integers(0, height, count), rng.integers(0, width, count), strict=True)
    }
    return sorted(pixels)


@pytest.mark.parametrize(
    "height,width",
    [
        (1, 1),
        (1, 7),
        (9, 1),
        (2, 2),
        (5, 3),
        (20, 30),
        (49, 50),
        (50, 49),
        (98, 99),
        (99, 100),
        (60, 150),
        (130, 97),
    ],
)
def test_splat_equals_dense_filter2d(height, width):
    rng = np.random.default_rng(height * 1000 + width)
    pixels = _border_and_random_pixels(rng, height, width, 8)
    frame = np.array([1 + i % 3 for i in range(len(pixels))])
    row, col = np.array([p[0] for p in pixels]), np.array([p[1] for p in pixels])
    values = rng.uniform(-1, 1, (len(pixels), 2))
    raw = np.zeros((4, height, width, 2), dtype=np.float32)
    raw[frame, row, col] = values
    # Small frames fold the whole kernel back in (sums up to ~628x); keep outputs in the ±50 range so the 1e-4
    # tolerance measures the geometry, not float32 resolution.
    scale = np.float32(50 / np.abs(_dense_reference(raw)).max())
    raw *= scale
    dense = _dense_reference(raw)
    ours = spread_displacements(
        frame, row, col, raw[frame, row, col, 0], raw[frame, row, col, 1], 4, height, width
    )
    assert np.abs(ours - dense).max() <= 1e-4


@pytest.mark.parametrize("sigma", [0.4, 2.5, 3.0, 5.0, 7.3])
def test_splat_at_another_sigma_equals_dense_filter2d_of_that_gaussian(sigma):
    """A model trained at another pixel scale (ToraConfig.flow_sigma) gets the same spreading rule at its σ: OpenCV's
    own Gaussian of that σ over 2r + 1 taps, r scaled from the release's 49 px at σ = 10, centre 1, reflect-101."""
    radius = kernel_radius(sigma)
    assert radius == max(1, round(4.9 * sigma))
    taps = cv2.getGaussianKernel(2 * radius + 1, sigma, cv2.CV_64F)  # [2r + 1, 1], sums to 1
    kernel = taps @ taps.T
    kernel /= kernel[radius, radius]
    rng = np.random.default_rng(int(sigma * 10))
    height, width = 64, 96
    pixels = _border_and_random_pixels(rng, height, width, 6)
    frame = np.array([1 + i % 2 for i in range(len(pixels))])
    row, col = np.array([p[0] for p in pixels]), np.array([p[1] for p in pixels])
    raw = np.zeros((3, height, width, 2), dtype=np.float32)
    raw[frame, row, col] = rng.uniform(-8, 8, (len(pixels), 2))
    dense = raw.copy()
    for i in (1, 2):
        dense[i] = cv2.filter2D(raw[i], -1, kernel)
    ours = spread_displacements(
        frame, row, col, raw[frame, row, col, 0], raw[frame, row, col, 1], 3, height, width, sigma=sigma
    )
    assert np.abs(ours - dense).max() <= 1e-4


def test_kernel_radius_is_the_release_kernel_at_sigma_10_and_refuses_a_bad_sigma():
    assert (SIGMA, kernel_radius(SIGMA)) == (10.0, 49)
    for bad in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(
            TrajectoryFormatError, match=f"sigma must be a positive number of pixels, got {bad}"
        ):
            kernel_radius(bad)


def test_a_narrower_sigma_keeps_two_nearby_paths_apart():
    """Why a model may name its own σ: at 96×64, two objects 16 px apart moving in opposite directions mix their
    flows under σ = 10 (each one's pixel carries 28 % of the other's move), while at σ = 3 each keeps its own."""
    points = np.array([[[40.0, 32.0], [44.0, 32.0]], [[56.0, 32.0], [52.0, 32.0]]])  # [2 tracks, 2 frames, 2]
    wide, narrow = render_flow(points, 64, 96), render_flow(points, 64, 96, sigma=3.0)
    own = np.array([4.0, 0.0])
    mixed = np.abs(wide[1, 32, 40] - own).max() / 4
    assert mixed == pytest.approx(np.exp(-(16**2) / 200), abs=1e-3)  # 0.278: the other blob's tail
    assert np.abs(narrow[1, 32, 40] - own).max() < 1e-6


def test_splat_large_frame_many_blobs_and_overlaps():
    rng = np.random.default_rng(1)
    height, width = 240, 360
    pixels = _border_and_random_pixels(rng, height, width, 40)
    frame = np.ones(len(pixels), dtype=np.int64)
    row, col = np.array([p[0] for p in pixels]), np.array([p[1] for p in pixels])
    dx, dy = (
        rng.normal(0, 40, len(pixels)).astype(np.float32),
        rng.normal(0, 40, len(pixels)).astype(np.float32),
    )
    raw = np.zeros((2, height, width, 2), dtype=np.float32)
    raw[frame, row, col, 0], raw[frame, row, col, 1] = dx, dy
    ours = spread_displacements(frame, row, col, dx, dy, 2, height, width)
    assert np.abs(ours - _dense_reference(raw)).max() <= 1e-4


# ------------------------------------------------------------------------------------------------ rasterisation


def test_raster_rules_previous_pixel_last_track_wins_far_edge():
    points = np.array(
        [
            [[10.7, 5.2], [12.7, 4.2], [20.0, 30.0]],  # moves (+2, -1) then (+7.3, +25.8)
            [[10.0, 5.9], [10.0, 6.0], [40.0, 30.0]],  # same pixel (5, 10) at frame 1: overwrites track 0
            [[20.0, 20.0], [20.0, 20.0], [20.0, 20.0]],  # a hold: no displacement anywhere
            [[40.0, 30.0], [40.0, 29.0], [39.0, 29.0]],  # starts on the far edges: pixel (29, 39)
        ]
    )
    frame, row, col, dx, dy = sparse_displacements(points, 30, 40)
    got = {
        (int(f), int(r), int(c)): (float(a), float(b))
        for f, r, c, a, b in zip(frame, row, col, dx, dy, strict=True)
    }
    assert got == {
        (1, 5, 10): (0.0, pytest.approx(0.1, abs=1e-6)),
        (2, 4, 12): (pytest.approx(7.3, abs=1e-5), pytest.approx(25.8, abs=1e-5)),
        (2, 6, 10): (30.0, 24.0),
        (1, 29, 39): (0.0, -1.0),
        (2, 29, 39): (-1.0, 0.0),
    }
    flow = render_flow(points, 30, 40)
    assert not flow[0].any() and flow[1].any()
    # Alone in the frame, a corner source keeps its exact value: no reflected copy lands on the corner itself.
    assert render_flow(points[3:], 30, 40)[1, 29, 39].tolist() == [0.0, -1.0]


def test_later_zero_displacement_still_overwrites():
    points = np.array([[[3.0, 3.0], [5.0, 3.0]], [[3.5, 3.5], [3.5, 3.5]]])
    assert sparse_displacements(points, 8, 8)[0].size == 0


@pytest.mark.parametrize(
    "value,match",
    [
        (40.5, "track 1, frame 2, field 'x': 40.5 is outside the frame [0, 40]"),
        (np.nan, "track 1, frame 2, field 'x'"),
    ],
)
def test_raster_refuses_points_outside_the_frame(value, match):
    points = np.full((2, 3, 2), 5.0)
    points[1, 2, 0] = value
    with pytest.raises(TrajectoryFormatError, match=match.replace("[", r"\[").replace("]", r"\]")):
        render_flow(points, 30, 40)
    with pytest.raises(TrajectoryFormatError, match="shape"):
        render_flow(np.zeros((3, 2)), 30, 40)


# ------------------------------------------------------------------------------------------------ colouring


def test_flow_to_rgb_equals_dense_algorithm_on_random_flow():
    rng = np.random.default_rng(3)
    flow = rng.normal(0, 5, (3, 17, 23, 2)).astype(np.float32)
    flow[0] = 0
    flow[1, :4] = -0.0
    flow[2, 5, 5] = (0, 1e-30)
    ours = flow_to_rgb(flow)
    np.testing.assert_array_equal(ours, _dense_rgb_reference(flow))
    assert (ours[0] == 255).all() and (ours[1, :4] == 255).all()
    torch_out = flow_to_rgb(torch.from_numpy(flow))
    assert isinstance(torch_out, torch.Tensor) and (torch_out.numpy() == ours).all()


def test_flow_to_rgb_zero_flow_and_errors():
    assert (flow_to_rgb(np.zeros((2, 4, 5, 2), np.float32)) == 255).all()
    with pytest.raises(TrajectoryFormatError, match="float32"):
        flow_to_rgb(np.zeros((2, 4, 5, 2)))
    with pytest.raises(TrajectoryFormatError, match=r"\[F, H, W, 2\]"):
        flow_to_rgb(np.zeros((4, 5, 2), np.float32))


def test_vae_input_layout_range_and_errors():
    rgb = np.zeros((5, 4, 6, 3), np.uint8)
    rgb[..., 0], rgb[2, 1, 3] = 255, (255, 0, 51)
    video = flow_video_to_vae_input(rgb, dtype=torch.bfloat16)
    assert video.shape == (1, 3, 5, 4, 6) and video.dtype == torch.bfloat16
    assert video[0, 0].eq(1).all() and video[0, 1, 2, 1, 3].item() == -1
    assert video[0, 2, 2, 1, 3].item() == pytest.approx(-0.6, abs=4e-3)  # bf16 resolution
    with pytest.raises(TrajectoryFormatError, match="uint8"):
        flow_video_to_vae_input(rgb.astype(np.float32))
