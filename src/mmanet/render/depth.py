"""Kinect-like depth: a structured-light sensor simulated on noise-free z-depth — noise and quantisation
in disparity, holes at depth discontinuities (with the projector's shadow), at grazing angles, in blobs
and at random pixels; what the sensor sees through a window."""

from __future__ import annotations

import numpy as np

from mmanet.render.raycast import Hits
from mmanet.render.scene import EPS, WINDOW, Scene
from mmanet.render.surfaces import decal_masks, plane_uv

# Kinect-like sensor constants (expressed for the 640-pixel-wide Kinect IR camera).
BASELINE = 0.075  # metres between the IR projector and camera
KINECT_BASELINE_FOCAL = BASELINE * 580.0  # metres × pixels at 640 px width: disparity = this / z
DISPARITY_STEP = 1.0 / 8.0  # sub-pixel disparity resolution
DISPARITY_NOISE = 0.07  # disparity noise std in pixels → z noise std ≈ 1.6 mm · z²
MIN_RANGE, MAX_RANGE = 0.5, 10.0  # metres


def depth_discontinuities(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of horizontal (between x and x+1) and vertical (y, y+1) neighbour pairs whose depths
    jump: the inverse depth changes by more than 2 % of the larger inverse depth plus a small
    slack. Smooth planes never trigger this (inverse depth is affine in pixel coordinates)."""
    inv = 1.0 / np.maximum(z, EPS)
    dh = np.abs(np.diff(inv, axis=1)) > 0.04 * np.maximum(inv[:, 1:], inv[:, :-1]) + 0.005
    dv = np.abs(np.diff(inv, axis=0)) > 0.04 * np.maximum(inv[1:], inv[:-1]) + 0.005
    return dh, dv


def _edge_holes(rng: np.random.Generator, z: np.ndarray, focal: float) -> np.ndarray:
    """Invalid pixels on both sides of depth discontinuities, plus the projector's shadow: left of
    an object, the background loses ``baseline · focal · (1/z_near − 1/z_far)`` pixels (±1, ragged)."""
    dh, dv = depth_discontinuities(z)
    holes = np.zeros(z.shape, dtype=bool)
    holes[:, :-1] |= dh
    holes[:, 1:] |= dh
    holes[:-1] |= dv
    holes[1:] |= dv
    inv = 1.0 / np.maximum(z, EPS)
    width = np.zeros(z.shape)
    far_left = dh & (z[:, :-1] > z[:, 1:])  # the far pixel left of a jump towards the camera
    width[:, :-1] = np.where(far_left, BASELINE * focal * (inv[:, 1:] - inv[:, :-1]), 0.0)
    width = np.where(width > 0, np.minimum(width, 8.0) + rng.uniform(-1.0, 1.0, z.shape), 0.0)
    for k in range(1, 9):
        holes[:, :-k] |= width[:, k:] > k
    return holes & (rng.random(z.shape) < 0.95)


def _blob_holes(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """0–3 random elliptical dropout blobs (specular or absorbing spots)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    holes = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(0, 4))):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(1.5, 6.0, size=2)
        holes |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    return holes


def kinect_depth(
    rng: np.random.Generator,
    z: np.ndarray,
    cos_view: np.ndarray,
    focal: float,
    extra_dropout: np.ndarray | None = None,
) -> np.ndarray:
    """Simulate a structured-light sensor on noise-free z-depth (metres, (H, W)) → uint16 mm, 0 = invalid.

    Noise and quantisation act on the disparity ``KINECT_BASELINE_FOCAL / z`` of the full-size
    sensor, so both grow with z²; out-of-range, edge (see :func:`_edge_holes`; ``focal`` in pixels),
    grazing-angle, blob and random pixel dropouts become 0. ``extra_dropout`` is a per-pixel dropout
    probability added on top. The number of random draws does not depend on the content, so two
    scenes differing only in colour get identical depth from identical generators.
    """
    shape = z.shape
    bf = KINECT_BASELINE_FOCAL
    disparity = bf / np.maximum(z, EPS) + rng.normal(0.0, DISPARITY_NOISE, shape)
    disparity = np.maximum(np.round(disparity / DISPARITY_STEP) * DISPARITY_STEP, DISPARITY_STEP)
    measured = bf / disparity
    invalid = (z < MIN_RANGE) | (z > MAX_RANGE) | (measured > MAX_RANGE)
    invalid |= _edge_holes(rng, z, focal)
    invalid |= (np.abs(cos_view) < 0.12) & (rng.random(shape) < 0.8)
    invalid |= _blob_holes(rng, shape)
    invalid |= rng.random(shape) < 0.004
    if extra_dropout is not None:
        invalid |= rng.random(shape) < extra_dropout
    mm = np.clip(np.rint(measured * 1000.0), 0, np.iinfo(np.uint16).max)
    return np.where(invalid, 0, mm).astype(np.uint16)


def window_sensor_depth(scene: Scene, hits: Hits, d: np.ndarray) -> np.ndarray:
    """z-depth (metres, (N,)) the sensor sees: through a window, an outdoor surface about ``far``
    metres behind the glass (with some relief); elsewhere the surface hit."""
    z = hits.t.copy()
    u, v = plane_uv(hits.point, hits.surface)
    for dec, mask, _, _ in decal_masks(scene, hits.surface, u, v):
        if dec.kind != WINDOW or not mask.any():
            continue
        behind = dec.far * (1.0 + 0.2 * np.sin(3.0 * u[mask] + dec.far) * np.cos(2.0 * v[mask]))
        outward = np.maximum(-(d[:, mask] * hits.normal[:, mask]).sum(axis=0), 0.05)
        z[mask] = hits.t[mask] + behind / outward  # ray parameter = z-depth
    return z
