"""Procedural synthetic RGB-D indoor rooms for segmentation (pure NumPy, deterministic by seed).

A pinhole camera stands inside a box room (four walls, floor, ceiling) holding a few axis-aligned
boxes and spheres. Every pixel's ray is cast against all surfaces at once (vectorised), lit by one
point light with hard shadows plus an orientation-dependent ambient term, and textured
procedurally. Depth follows a Kinect-like sensor model: noise and quantisation in disparity (so
both grow with the square of the distance), holes at depth discontinuities (with the projector's
shadow), at grazing angles, in random blobs and at random pixels; values are uint16 millimetres
with 0 = invalid, labels are uint8 with 0 = void (a one-pixel band where objects and decals meet
other classes), as in NYUv2.

The classes make the two modalities complementary:

* ``painting`` (on walls) and ``rug`` (on the floor) are flat decals: they change only the
  colour; rendered with the same generator, a scene without them has bit-identical depth.
* ``window`` (on walls) has exactly the wall's colour and texture, but the sensor sees through
  the glass: its depth is mostly invalid (0) and otherwise far beyond the wall.
* ``box`` and ``sphere`` share one colour distribution; their shape is what separates them,
  which depth shows directly.

Scene ``i`` of :func:`render_rooms` depends only on ``(seed, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "void",
    "wall",
    "floor",
    "ceiling",
    "box",
    "sphere",
    "painting",
    "rug",
    "window",
)
VOID, WALL, FLOOR, CEILING, BOX, SPHERE, PAINTING, RUG, WINDOW = range(len(CLASS_NAMES))
NUM_CLASSES = len(CLASS_NAMES)

PALETTE = np.array(
    [
        [0, 0, 0],  # void
        [174, 199, 232],  # wall
        [140, 86, 75],  # floor
        [199, 199, 199],  # ceiling
        [255, 127, 14],  # box
        [44, 160, 44],  # sphere
        [214, 39, 40],  # painting
        [148, 103, 189],  # rug
        [23, 190, 207],  # window
    ],
    dtype=np.uint8,
)
"""Fixed display colour of every class (row = label id)."""

# Room planes: id = 2 * axis + (ray direction along that axis is positive).
PLANE_X0, PLANE_X1, PLANE_FLOOR, PLANE_CEILING, PLANE_Z0, PLANE_Z1 = range(6)
WALL_PLANES = (PLANE_X0, PLANE_X1, PLANE_Z0, PLANE_Z1)
NUM_PLANES = 6

# Kinect-like sensor constants (expressed for the 640-pixel-wide Kinect IR camera).
BASELINE = 0.075  # metres between the IR projector and camera
KINECT_BASELINE_FOCAL = BASELINE * 580.0  # metres × pixels at 640 px width: disparity = this / z
DISPARITY_STEP = 1.0 / 8.0  # sub-pixel disparity resolution
DISPARITY_NOISE = 0.07  # disparity noise std in pixels → z noise std ≈ 1.6 mm · z²
MIN_RANGE, MAX_RANGE = 0.5, 10.0  # metres

_EPS = 1e-6


# --------------------------------------------------------------------------- scene description
@dataclass(frozen=True)
class Camera:
    """Pinhole camera: ``rotation`` columns are the world directions of the camera's right, up
    and forward axes; pixel rays are ``rotation @ (x, y, 1)`` so ray parameter = z-depth."""

    position: np.ndarray
    rotation: np.ndarray
    focal: float
    height: int
    width: int


@dataclass(frozen=True)
class Box:
    """Axis-aligned box from ``lo`` to ``hi`` (metres) with an RGB albedo in [0, 1]."""

    lo: np.ndarray
    hi: np.ndarray
    albedo: np.ndarray


@dataclass(frozen=True)
class Sphere:
    """Sphere with an RGB albedo in [0, 1]."""

    centre: np.ndarray
    radius: float
    albedo: np.ndarray


@dataclass(frozen=True)
class Decal:
    """A flat rectangle ``[u0, u1] × [v0, v1]`` in the (u, v) coordinates of a room plane.

    ``kind`` is ``PAINTING``, ``RUG`` or ``WINDOW``; ``colours`` and ``params`` drive its pattern
    (windows have none: they take the wall's colour); ``far`` is how far behind the wall the
    outdoor scene seen through a window lies.
    """

    kind: int
    plane: int
    u0: float
    u1: float
    v0: float
    v1: float
    colours: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    params: np.ndarray = field(default_factory=lambda: np.zeros(0))
    far: float = 0.0


@dataclass(frozen=True)
class Materials:
    """Per-scene albedos and texture parameters of the room surfaces."""

    wall: np.ndarray  # (4, 3): one colour per wall plane, in WALL_PLANES order
    wall_texture: np.ndarray  # (3, 4): sinusoids (fu, fv, phase, amplitude) of the plaster
    wall_stripes: float  # wallpaper stripe period in metres (0 = none)
    floor: np.ndarray  # (3,)
    floor_style: int  # 0 planks, 1 tiles, 2 plain carpet
    floor_params: np.ndarray  # style parameters (plank/tile size, axis, hash offset)
    ceiling: np.ndarray  # (3,)


@dataclass(frozen=True)
class Lighting:
    """One point light with distance falloff plus an ambient term; camera-side gains."""

    position: np.ndarray
    ambient: float
    diffuse: float
    falloff: float  # distance (m) at which the direct light has halved
    exposure: float  # auto-exposure target: mean linear brightness of the image
    white_balance: np.ndarray  # per-channel gains


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one room."""

    size: np.ndarray  # room extent (x, y, z) in metres; the floor is y = 0
    camera: Camera
    boxes: tuple[Box, ...]
    spheres: tuple[Sphere, ...]
    decals: tuple[Decal, ...]
    materials: Materials
    lighting: Lighting


@dataclass(frozen=True)
class RoomRender:
    """A rendered scene with the intermediate layers the public tuple leaves out.

    ``depth_clean``: noise-free z-depth in metres of the visible geometry (a window shows its
    wall's depth here); ``surface``: 0–5 room plane, 6 + k the k-th object (boxes, then spheres);
    ``normal``: unit surface normal (H, W, 3).
    """

    rgb: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    depth_clean: np.ndarray
    surface: np.ndarray
    normal: np.ndarray
    scene: Scene


# --------------------------------------------------------------------------- random sampling
def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) to RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


Range = tuple[float, float]


def _colour(rng: np.random.Generator, hue: Range, sat: Range, val: Range) -> np.ndarray:
    """A random colour with hue, saturation and value drawn uniformly from the given ranges."""
    return _hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val))


def _distinct_colour(rng: np.random.Generator, avoid: np.ndarray, min_dist: float = 0.3, **ranges) -> np.ndarray:
    """A random colour at least ``min_dist`` (Euclidean, RGB in [0, 1]) from ``avoid`` (best of 20 tries)."""
    best, best_dist = None, -1.0
    for _ in range(20):
        c = _colour(rng, **ranges)
        d = float(np.linalg.norm(c - avoid))
        if d >= min_dist:
            return c
        if d > best_dist:
            best, best_dist = c, d
    return best


def _sample_room(rng: np.random.Generator) -> np.ndarray:
    """Room extent (x, height, z) in metres."""
    return np.array([rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.2), rng.uniform(3.0, 7.0)])


def _ray_to_room(size: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> tuple[float, int]:
    """Distance and plane id where one ray from inside the room leaves it."""
    t = np.where(direction > 0, (size - origin) / np.maximum(direction, _EPS), origin / np.maximum(-direction, _EPS))
    axis = int(np.argmin(t))
    return float(t[axis]), 2 * axis + int(direction[axis] > 0)


def _sample_camera(rng: np.random.Generator, size: np.ndarray, height: int, width: int) -> Camera:
    """A camera 1.1–1.7 m high, looking (mostly) across the room, slightly downwards."""
    margin = 0.4
    pos = np.array(
        [rng.uniform(margin, size[0] - margin), rng.uniform(1.1, 1.7), rng.uniform(margin, size[2] - margin)]
    )
    want = min(2.2, 0.55 * max(size[0], size[2]))
    best_yaw, best_free = 0.0, -1.0
    for _ in range(24):
        yaw = rng.uniform(0.0, 2.0 * np.pi)
        free, _ = _ray_to_room(size, pos, np.array([np.sin(yaw), 0.0, np.cos(yaw)]))
        if free > best_free:
            best_yaw, best_free = yaw, free
        if free >= want:
            break
    pitch = np.deg2rad(rng.uniform(-28.0, 4.0))
    roll = np.deg2rad(rng.normal(0.0, 1.5))
    forward = np.array([np.cos(pitch) * np.sin(best_yaw), np.sin(pitch), np.cos(pitch) * np.cos(best_yaw)])
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    right, up = np.cos(roll) * right + np.sin(roll) * up, np.cos(roll) * up - np.sin(roll) * right
    fov = np.deg2rad(rng.uniform(55.0, 65.0))
    focal = 0.5 * width / np.tan(0.5 * fov)
    return Camera(pos, np.stack([right, up, forward], axis=1), float(focal), height, width)


def _camera_yaw(camera: Camera) -> float:
    """Heading of the camera's forward axis in the floor plane."""
    f = camera.rotation[:, 2]
    return float(np.arctan2(f[0], f[2]))


def _half_fov(camera: Camera) -> float:
    """Half of the horizontal field of view in radians."""
    return float(np.arctan(0.5 * camera.width / camera.focal))


def _point_in_view(
    rng: np.random.Generator, size: np.ndarray, camera: Camera, dist: Range, margin: float
) -> np.ndarray:
    """A floor point (x, z) inside the horizontal field of view, kept ``margin`` from the walls."""
    yaw = _camera_yaw(camera) + rng.uniform(-1.0, 1.0) * (_half_fov(camera) + 0.1)
    direction = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    free, _ = _ray_to_room(size, camera.position, direction)
    r = rng.uniform(dist[0], max(dist[0], min(dist[1], free - margin)))
    xz = camera.position[[0, 2]] + r * direction[[0, 2]]
    return np.clip(xz, margin, size[[0, 2]] - margin)


def _object_albedo(rng: np.random.Generator) -> np.ndarray:
    """Boxes and spheres share this colour distribution (shape, not colour, tells them apart)."""
    return _colour(rng, hue=(0.0, 1.0), sat=(0.15, 0.85), val=(0.2, 0.9))


def _footprint_free(xz: np.ndarray, radius: float, taken: list[tuple[np.ndarray, float]]) -> bool:
    """Whether a floor disc of ``radius`` around ``xz`` misses every disc in ``taken``."""
    return all(np.linalg.norm(xz - c) > radius + r + 0.05 for c, r in taken)


def _sample_objects(
    rng: np.random.Generator, size: np.ndarray, camera: Camera
) -> tuple[tuple[Box, ...], tuple[Sphere, ...]]:
    """1–4 boxes and 1–3 spheres on the floor (a sphere may rest on a box), not touching the camera."""
    taken: list[tuple[np.ndarray, float]] = [(camera.position[[0, 2]], 0.8)]
    boxes: list[Box] = []
    spheres: list[Sphere] = []
    for _ in range(int(rng.integers(1, 5))):
        half = rng.uniform(0.15, 0.6, size=2)
        for _ in range(10):
            xz = _point_in_view(rng, size, camera, (1.4, 4.5), float(half.max()) + 0.02)
            if _footprint_free(xz, float(np.hypot(*half)), taken):
                h = rng.uniform(0.25, 1.2)
                lo = np.array([xz[0] - half[0], 0.0, xz[1] - half[1]])
                hi = np.array([xz[0] + half[0], h, xz[1] + half[1]])
                boxes.append(Box(lo, hi, _object_albedo(rng)))
                taken.append((xz, float(np.hypot(*half))))
                break
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(0.15, 0.45)
        if boxes and rng.random() < 0.25:
            b = boxes[int(rng.integers(len(boxes)))]
            if min(b.hi[0] - b.lo[0], b.hi[2] - b.lo[2]) > radius and b.hi[1] + 2 * radius < size[1] - 0.3:
                centre = np.array([(b.lo[0] + b.hi[0]) / 2, b.hi[1] + radius, (b.lo[2] + b.hi[2]) / 2])
                spheres.append(Sphere(centre, float(radius), _object_albedo(rng)))
                continue
        for _ in range(10):
            xz = _point_in_view(rng, size, camera, (1.4, 4.5), radius + 0.02)
            if _footprint_free(xz, radius, taken):
                spheres.append(Sphere(np.array([xz[0], radius, xz[1]]), float(radius), _object_albedo(rng)))
                taken.append((xz, radius))
                break
    return tuple(boxes), tuple(spheres)


def _wall_length(size: np.ndarray, plane: int) -> float:
    """Horizontal length of a wall plane (its u axis is z for x-walls, x for z-walls)."""
    return float(size[2] if plane in (PLANE_X0, PLANE_X1) else size[0])


def _visible_wall_spot(rng: np.random.Generator, size: np.ndarray, camera: Camera) -> tuple[int, float]:
    """A wall plane and u coordinate hit by a random horizontal ray inside the field of view."""
    yaw = _camera_yaw(camera) + rng.uniform(-1.0, 1.0) * _half_fov(camera)
    d = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    t, plane = _ray_to_room(size, camera.position, d)
    p = camera.position + t * d
    return plane, float(p[2] if plane in (PLANE_X0, PLANE_X1) else p[0])


WallRect = tuple[int, float, float, float, float]  # plane, u0, u1, v0, v1


def _wall_rectangle(
    rng: np.random.Generator, size: np.ndarray, camera: Camera, w_range: Range, h_range: Range, v0_range: Range
) -> WallRect:
    """A (plane, u0, u1, v0, v1) rectangle on a wall, usually on a visible part of it."""
    if rng.random() < 0.8:
        plane, u_centre = _visible_wall_spot(rng, size, camera)
    else:
        plane = WALL_PLANES[int(rng.integers(4))]
        u_centre = rng.uniform(0.0, _wall_length(size, plane))
    length = _wall_length(size, plane)
    w = min(rng.uniform(*w_range), length - 0.4)
    h = rng.uniform(*h_range)
    u0 = float(np.clip(u_centre - w / 2, 0.2, length - 0.2 - w))
    v0 = float(min(rng.uniform(*v0_range), size[1] - 0.2 - h))
    return plane, u0, u0 + w, v0, v0 + h


def _overlaps(rect: WallRect, decals: list[Decal], gap: float = 0.1) -> bool:
    """Whether a (plane, u0, u1, v0, v1) rectangle comes within ``gap`` of a decal on the same plane."""
    plane, u0, u1, v0, v1 = rect
    return any(
        d.plane == plane and u0 < d.u1 + gap and d.u0 < u1 + gap and v0 < d.v1 + gap and d.v0 < v1 + gap for d in decals
    )


def _sample_wall_decals(
    rng: np.random.Generator, size: np.ndarray, camera: Camera, wall_colours: np.ndarray
) -> list[Decal]:
    """0–2 windows and 0–3 paintings on the walls, never overlapping."""
    decals: list[Decal] = []
    n_windows = int(rng.choice(3, p=[0.2, 0.5, 0.3]))
    n_paintings = int(rng.choice(4, p=[0.1, 0.4, 0.3, 0.2]))
    for kind in [WINDOW] * n_windows + [PAINTING] * n_paintings:
        for _ in range(10):
            if kind == WINDOW:
                rect = _wall_rectangle(rng, size, camera, (0.6, 1.8), (0.8, 1.4), (0.7, 1.1))
            else:
                rect = _wall_rectangle(rng, size, camera, (0.4, 1.4), (0.3, 1.0), (1.0, 1.6))
            if not _overlaps(rect, decals):
                break
        else:
            continue
        if kind == WINDOW:
            decals.append(Decal(WINDOW, *rect, far=float(rng.uniform(2.5, 8.0))))
        else:
            wall = wall_colours[WALL_PLANES.index(rect[0])]
            decals.append(Decal(PAINTING, *rect, colours=_painting_colours(rng, wall), params=rng.uniform(size=13)))
    return decals


def _painting_colours(rng: np.random.Generator, wall: np.ndarray) -> np.ndarray:
    """Frame colour then 3 vivid interior colours, all clearly different from the wall."""
    frame = _distinct_colour(rng, wall, 0.35, hue=(0.05, 0.12), sat=(0.2, 0.8), val=(0.05, 0.6))
    inner = [_distinct_colour(rng, wall, 0.35, hue=(0.0, 1.0), sat=(0.4, 1.0), val=(0.25, 1.0)) for _ in range(3)]
    return np.stack([frame, *inner])


def _sample_rug(rng: np.random.Generator, size: np.ndarray, camera: Camera, floor: np.ndarray) -> Decal:
    """A patterned rug on the floor in front of the camera (objects may stand on it)."""
    w, d = rng.uniform(1.0, 2.8), rng.uniform(0.8, 2.2)
    w, d = min(w, size[0] - 0.4), min(d, size[2] - 0.4)
    xz = _point_in_view(rng, size, camera, (1.2, 3.2), 0.2)
    x0 = float(np.clip(xz[0] - w / 2, 0.2, size[0] - 0.2 - w))
    z0 = float(np.clip(xz[1] - d / 2, 0.2, size[2] - 0.2 - d))
    colours = np.stack(
        [_distinct_colour(rng, floor, 0.35, hue=(0.0, 1.0), sat=(0.3, 0.9), val=(0.2, 0.85)) for _ in range(3)]
    )
    params = np.array([rng.integers(2), rng.uniform(0.08, 0.3), rng.uniform(0.06, 0.15), rng.integers(2)])
    return Decal(RUG, PLANE_FLOOR, x0, x0 + w, z0, z0 + d, colours=colours, params=params)


def _sample_materials(rng: np.random.Generator) -> Materials:
    """Wall paint (one accent wall sometimes), floor style and ceiling colour."""
    base = _colour(rng, hue=(0.0, 1.0), sat=(0.0, 0.3), val=(0.5, 0.92))
    walls = np.repeat(base[None], 4, axis=0)
    if rng.random() < 0.3:
        walls[int(rng.integers(4))] = _colour(rng, hue=(0.0, 1.0), sat=(0.1, 0.5), val=(0.35, 0.85))
    texture = np.stack(
        [rng.uniform(0.5, 6.0, 3), rng.uniform(0.5, 6.0, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.003, 0.02, 3)],
        axis=1,
    )
    stripes = float(rng.uniform(0.1, 0.4)) if rng.random() < 0.3 else 0.0
    style = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
    if style == 0:
        floor = _colour(rng, hue=(0.04, 0.12), sat=(0.3, 0.7), val=(0.25, 0.75))
    elif style == 1:
        floor = _colour(rng, hue=(0.0, 1.0), sat=(0.0, 0.2), val=(0.4, 0.9))
    else:
        floor = _colour(rng, hue=(0.0, 1.0), sat=(0.05, 0.4), val=(0.25, 0.7))
    params = np.array([rng.uniform(0.1, 0.25), rng.uniform(0.3, 0.6), rng.integers(2), rng.uniform(0, 100)])
    ceiling = _colour(rng, hue=(0.0, 1.0), sat=(0.0, 0.06), val=(0.8, 0.97))
    return Materials(walls, texture, stripes, floor, style, params, ceiling)


def _sample_lighting(rng: np.random.Generator, size: np.ndarray) -> Lighting:
    """A ceiling lamp somewhere in the room, random strength, exposure and white balance."""
    pos = np.array([rng.uniform(0.3, size[0] - 0.3), size[1] - rng.uniform(0.2, 0.6), rng.uniform(0.3, size[2] - 0.3)])
    white_balance = rng.normal(1.0, 0.05, 3)
    return Lighting(
        pos, rng.uniform(0.25, 0.5), rng.uniform(0.6, 1.1), rng.uniform(2.5, 5.0), rng.uniform(0.3, 0.5), white_balance
    )


def sample_scene(rng: np.random.Generator, height: int = 96, width: int = 128) -> Scene:
    """Draw a random room, camera, objects, decals, materials and lighting."""
    size = _sample_room(rng)
    camera = _sample_camera(rng, size, height, width)
    boxes, spheres = _sample_objects(rng, size, camera)
    materials = _sample_materials(rng)
    decals = _sample_wall_decals(rng, size, camera, materials.wall)
    if rng.random() < 0.75:
        decals.append(_sample_rug(rng, size, camera, materials.floor))
    lighting = _sample_lighting(rng, size)
    return Scene(size, camera, boxes, spheres, tuple(decals), materials, lighting)


# --------------------------------------------------------------------------- ray casting
# Per-pixel vectors are stored components-first, (3, N), so that every operation runs on
# contiguous rows of N values.
def camera_rays(camera: Camera) -> np.ndarray:
    """World ray directions (3, H·W) through pixel centres, scaled so that the ray parameter is z-depth."""
    j = (np.arange(camera.width) + 0.5 - camera.width / 2) / camera.focal
    i = -(np.arange(camera.height) + 0.5 - camera.height / 2) / camera.focal
    x, y = np.meshgrid(j, i)
    return camera.rotation @ np.stack([x.ravel(), y.ravel(), np.ones(x.size)])


def _inverse(d: np.ndarray) -> np.ndarray:
    """Component-wise 1 / d with (near-)zero components pushed to ±1e12."""
    return 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)


def _hit_room(size: np.ndarray, origin: np.ndarray, inv_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit distance and plane id of rays leaving the room from ``origin`` (inside it)."""
    positive = inv_d > 0
    t_axes = np.where(positive, size[:, None] - origin[:, None], -origin[:, None]) * inv_d
    axis = np.argmin(t_axes, axis=0)
    cols = np.arange(t_axes.shape[1])
    return t_axes[axis, cols], 2 * axis + positive[axis, cols]


def _hit_box(box: Box, origin: np.ndarray, inv_d: np.ndarray) -> np.ndarray:
    """Entry distance of rays into an axis-aligned box (slab method); inf on a miss."""
    t1 = (box.lo[:, None] - origin) * inv_d
    t2 = (box.hi[:, None] - origin) * inv_d
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_in = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_out = np.minimum(np.minimum(far[0], far[1]), far[2])
    return np.where((t_in <= t_out) & (t_in > 1e-4), t_in, np.inf)


def _hit_sphere(sphere: Sphere, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Nearest positive distance of rays hitting a sphere; inf on a miss."""
    oc = origin - sphere.centre[:, None]
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = d[0] * oc[0] + d[1] * oc[1] + d[2] * oc[2]
    c = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - sphere.radius**2
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc > 0) & (t > 1e-4), t, np.inf)


def _box_normals(box: Box, point: np.ndarray) -> np.ndarray:
    """Outward unit normals (3, n) of points lying on a box's surface: the face they are closest to."""
    gaps = np.concatenate([np.abs(point - box.lo[:, None]), np.abs(point - box.hi[:, None])])
    face = np.argmin(gaps, axis=0)
    normal = np.zeros_like(point)
    normal[face % 3, np.arange(point.shape[1])] = np.where(face < 3, -1.0, 1.0)
    return normal


def _room_normals(plane: np.ndarray) -> np.ndarray:
    """Inward unit normals (3, n) of room plane ids."""
    normal = np.zeros((3, plane.size))
    normal[plane // 2, np.arange(plane.size)] = np.where(plane % 2 == 0, 1.0, -1.0)
    return normal


@dataclass(frozen=True)
class _Hits:
    """Per-ray nearest hit: distance (= z-depth for camera rays), surface id, point (3, N), unit normal (3, N)."""

    t: np.ndarray
    surface: np.ndarray
    point: np.ndarray
    normal: np.ndarray


def _objects(scene: Scene) -> tuple[Box | Sphere, ...]:
    """Boxes then spheres; object k has surface id NUM_PLANES + k."""
    return (*scene.boxes, *scene.spheres)


def cast(scene: Scene, origin: np.ndarray, d: np.ndarray) -> _Hits:
    """Nearest hit of camera rays ``d`` (3, N) from ``origin`` (3,) against the room and every object."""
    inv_d = _inverse(d)
    t, surface = _hit_room(scene.size, origin, inv_d)
    o = origin[:, None]
    for k, obj in enumerate(_objects(scene)):
        t_obj = _hit_box(obj, o, inv_d) if isinstance(obj, Box) else _hit_sphere(obj, o, d)
        closer = t_obj < t
        t = np.where(closer, t_obj, t)
        surface = np.where(closer, NUM_PLANES + k, surface)
    point = o + t * d
    normal = np.zeros_like(point)
    room = surface < NUM_PLANES
    normal[:, room] = _room_normals(surface[room])
    for k, obj in enumerate(_objects(scene)):
        mine = surface == NUM_PLANES + k
        if isinstance(obj, Box):
            normal[:, mine] = _box_normals(obj, point[:, mine])
        else:
            normal[:, mine] = (point[:, mine] - obj.centre[:, None]) / obj.radius
    return _Hits(t, surface, point, normal)


def _shadowed(scene: Scene, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Whether an object blocks the light for every point (3, N) (shadow rays, all at once)."""
    origin = points + 1e-3 * normals
    to_light = scene.lighting.position[:, None] - origin
    inv = _inverse(to_light)
    blocked = np.zeros(points.shape[1], dtype=bool)
    for obj in _objects(scene):
        t_obj = _hit_box(obj, origin, inv) if isinstance(obj, Box) else _hit_sphere(obj, origin, to_light)
        blocked |= t_obj < 1.0
    return blocked


# --------------------------------------------------------------------------- textures and labels
def plane_uv(point: np.ndarray, surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) on the room planes for points (3, N): walls u = z or x, v = height; floor/ceiling u = x, v = z."""
    x_wall = (surface == PLANE_X0) | (surface == PLANE_X1)
    horizontal = (surface == PLANE_FLOOR) | (surface == PLANE_CEILING)
    return np.where(x_wall, point[2], point[0]), np.where(horizontal, point[2], point[1])


def _decal_masks(
    scene: Scene, surface: np.ndarray, u: np.ndarray, v: np.ndarray
) -> list[tuple[Decal, np.ndarray, np.ndarray, np.ndarray]]:
    """(decal, mask, s, t) for every decal with its normalised in-rectangle coordinates s, t ∈ [0, 1]."""
    out = []
    for dec in scene.decals:
        s, t = (u - dec.u0) / (dec.u1 - dec.u0), (v - dec.v0) / (dec.v1 - dec.v0)
        mask = (surface == dec.plane) & (s >= 0) & (s <= 1) & (t >= 0) & (t <= 1)
        out.append((dec, mask, s, t))
    return out


def _hash(n: np.ndarray, offset: float) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer cell."""
    return np.modf(np.abs(np.sin(n * 12.9898 + offset) * 43758.5453))[0]


def _wall_albedo(scene: Scene, surface: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Painted plaster (n, 3) with optional wallpaper stripes; windows get exactly this too."""
    mat = scene.materials
    base = mat.wall[np.searchsorted(WALL_PLANES, surface)]
    shade = 1.0 + sum(a * np.sin(2 * np.pi * (fu * u + fv * v) + ph) for fu, fv, ph, a in mat.wall_texture)
    if mat.wall_stripes > 0:
        shade = shade + 0.06 * (np.floor(u / mat.wall_stripes) % 2 - 0.5)
    return base * shade[:, None]


def _floor_albedo(scene: Scene, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Wooden planks, tiles with grout, or plain carpet (n, 3)."""
    mat = scene.materials
    plank, tile, axis, offset = mat.floor_params
    if mat.floor_style == 0:
        across, along = (u, v) if axis == 0 else (v, u)
        index = np.floor(across / plank)
        shade = 0.85 + 0.3 * _hash(index, offset) + 0.04 * np.sin(along * 25.0 + 7.0 * _hash(index, offset + 1))
        shade = np.where((across / plank) % 1.0 < 0.06, 0.8 * shade, shade)
    elif mat.floor_style == 1:
        iu, iv = np.floor(u / tile), np.floor(v / tile)
        shade = np.where((iu + iv) % 2 == 0, 1.0, 0.88)
        grout = ((u / tile) % 1.0 < 0.03) | ((v / tile) % 1.0 < 0.03)
        shade = np.where(grout, 0.55, shade)
    else:
        shade = 0.95 + 0.05 * np.sin(u * 13.0 + offset) * np.sin(v * 11.0)
    return mat.floor * shade[:, None]


def _painting_albedo(dec: Decal, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Framed abstract art: the interior is split into colour regions by random wave fields."""
    p = dec.params
    frame = np.minimum(np.minimum(s, 1 - s), np.minimum(t, 1 - t)) < 0.04 + 0.06 * p[0]
    fields = np.stack(
        [np.sin(2 * np.pi * (p[1 + 3 * k] * 3 * s + p[2 + 3 * k] * 3 * t) + 6 * p[3 + 3 * k]) for k in range(3)], axis=1
    )
    fields[:, 2] += 2.0 * (p[10] - 0.5)
    region = np.argmax(fields, axis=1)
    colour = dec.colours[1 + region] * (0.85 + 0.15 * np.sin(2 * np.pi * (s * 2 + t * 3 * p[11]))[:, None])
    return np.where(frame[:, None], dec.colours[0], colour)


def _rug_albedo(dec: Decal, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A bordered rug with stripes or a checker pattern inside."""
    style, period, border, axis = dec.params
    edge = np.minimum(np.minimum(u - dec.u0, dec.u1 - u), np.minimum(v - dec.v0, dec.v1 - v)) < border
    coord = u if axis == 0 else v
    if style == 0:
        inner = (np.floor(coord / period) % 2).astype(int)
    else:
        inner = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(int)
    colour = dec.colours[np.where(edge, 2, inner)]
    fibre = 0.93 + 0.07 * np.sin(u * 97.0) * np.sin(v * 89.0)
    return colour * fibre[:, None]


def _object_albedo_map(scene: Scene, surface: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Albedo (n, 3) of box and sphere pixels: their colour with a faint surface grain."""
    colours = np.array([o.albedo for o in _objects(scene)])
    grain = 1.0 + 0.03 * np.sin(point[0] * 40.0) * np.sin(point[1] * 37.0 + point[2] * 23.0)
    return colours[surface - NUM_PLANES] * grain[:, None]


def _structure_label(scene: Scene, surface: np.ndarray) -> np.ndarray:
    """Labels from geometry alone (decals not yet applied)."""
    lut = np.array([WALL, WALL, FLOOR, CEILING, WALL, WALL] + [BOX] * len(scene.boxes) + [SPHERE] * len(scene.spheres))
    return lut[surface].astype(np.uint8)


def _albedo_and_label(scene: Scene, hits: _Hits) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel albedo (N, 3) and label (N,) from the surfaces and decals hit."""
    surface = hits.surface
    u, v = plane_uv(hits.point, surface)
    label = _structure_label(scene, surface)
    albedo = np.empty((surface.size, 3))
    wall, floor, objects = label == WALL, surface == PLANE_FLOOR, surface >= NUM_PLANES
    albedo[wall] = _wall_albedo(scene, surface[wall], u[wall], v[wall])
    albedo[floor] = _floor_albedo(scene, u[floor], v[floor])
    albedo[surface == PLANE_CEILING] = scene.materials.ceiling
    albedo[objects] = _object_albedo_map(scene, surface[objects], hits.point[:, objects])
    for dec, mask, s, t in _decal_masks(scene, surface, u, v):
        if not mask.any():
            continue
        label[mask] = dec.kind
        if dec.kind == PAINTING:
            albedo[mask] = _painting_albedo(dec, s[mask], t[mask])
        elif dec.kind == RUG:
            albedo[mask] = _rug_albedo(dec, u[mask], v[mask])
    return np.clip(albedo, 0.0, 1.0), label


def _shade(scene: Scene, hits: _Hits, albedo: np.ndarray) -> np.ndarray:
    """Lambertian point light with hard shadows and distance falloff, plus a sky-like ambient term."""
    light = scene.lighting
    to_light = light.position[:, None] - hits.point
    dist = np.sqrt((to_light**2).sum(axis=0))
    cos = np.maximum((hits.normal * to_light).sum(axis=0) / np.maximum(dist, _EPS), 0.0)
    lit = ~_shadowed(scene, hits.point, hits.normal)
    direct = light.diffuse * cos * lit / (1.0 + (dist / light.falloff) ** 2)
    ambient = light.ambient * (0.85 + 0.15 * hits.normal[1])
    return albedo * (ambient + direct)[:, None]


def _finish_rgb(rng: np.random.Generator, scene: Scene, radiance: np.ndarray) -> np.ndarray:
    """Auto-exposure, white balance, vignetting, gamma and sensor noise → uint8 (H, W, 3)."""
    cam, light = scene.camera, scene.lighting
    gain = np.clip(light.exposure / max(float(radiance.mean()), _EPS), 0.7, 3.0)
    img = radiance.reshape(cam.height, cam.width, 3) * (gain * light.white_balance)
    yy, xx = np.mgrid[0 : cam.height, 0 : cam.width]
    r2 = ((xx - cam.width / 2) ** 2 + (yy - cam.height / 2) ** 2) / (0.25 * (cam.width**2 + cam.height**2))
    img = img * (1.0 - 0.25 * r2)[..., None]
    img = np.clip(img, 0.0, 1.0) ** (1 / 1.4) * 255.0
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * 2.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- Kinect-like depth
def depth_discontinuities(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of horizontal (between x and x+1) and vertical (y, y+1) neighbour pairs whose depths
    jump: the inverse depth changes by more than 2 % of the larger inverse depth plus a small
    slack. Smooth planes never trigger this (inverse depth is affine in pixel coordinates)."""
    inv = 1.0 / np.maximum(z, _EPS)
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
    inv = 1.0 / np.maximum(z, _EPS)
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
    disparity = bf / np.maximum(z, _EPS) + rng.normal(0.0, DISPARITY_NOISE, shape)
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


def _window_sensor_depth(scene: Scene, hits: _Hits, d: np.ndarray) -> np.ndarray:
    """z-depth (metres, (N,)) the sensor sees: through a window, an outdoor surface about ``far``
    metres behind the glass (with some relief); elsewhere the surface hit."""
    z = hits.t.copy()
    u, v = plane_uv(hits.point, hits.surface)
    for dec, mask, _, _ in _decal_masks(scene, hits.surface, u, v):
        if dec.kind != WINDOW or not mask.any():
            continue
        behind = dec.far * (1.0 + 0.2 * np.sin(3.0 * u[mask] + dec.far) * np.cos(2.0 * v[mask]))
        outward = np.maximum(-(d[:, mask] * hits.normal[:, mask]).sum(axis=0), 0.05)
        z[mask] = hits.t[mask] + behind / outward  # ray parameter = z-depth
    return z


# --------------------------------------------------------------------------- labels
def _void_band(label: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Leave a one-pixel unlabelled band where an object or decal meets another class (like
    NYUv2 annotations): of each differing neighbour pair the farther pixel (ties: the later one)
    becomes void. Boundaries among wall/floor/ceiling stay labelled."""
    structural = label <= CEILING
    out = label.copy()
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        boundary = (label[a] != label[b]) & ~(structural[a] & structural[b])
        first_farther = z[a] > z[b] + 1e-3
        out[a][boundary & first_farther] = VOID
        out[b][boundary & ~first_farther] = VOID
    return out


# --------------------------------------------------------------------------- public API
def render(scene: Scene, rng: np.random.Generator) -> RoomRender:
    """Render a given scene; ``rng`` drives only the sensor effects (colour noise, depth noise and
    holes), with a fixed number of draws whatever the scene holds."""
    height, width = scene.camera.height, scene.camera.width
    d = camera_rays(scene.camera)
    hits = cast(scene, scene.camera.position, d)
    albedo, label = _albedo_and_label(scene, hits)
    rgb = _finish_rgb(rng, scene, _shade(scene, hits, albedo))
    shape = (height, width)
    cos_view = (hits.normal * d).sum(axis=0) / np.sqrt((d**2).sum(axis=0))
    sensor_z = _window_sensor_depth(scene, hits, d).reshape(shape)
    glass = np.where(label == WINDOW, 0.5, 0.0).reshape(shape)  # reflections on the glass
    depth = kinect_depth(rng, sensor_z, cos_view.reshape(shape), scene.camera.focal, extra_dropout=glass)
    z = hits.t.reshape(shape)
    return RoomRender(
        rgb=rgb,
        depth=depth,
        label=_void_band(label.reshape(shape), z),
        depth_clean=z.astype(np.float32),
        surface=hits.surface.reshape(shape).astype(np.int16),
        normal=hits.normal.T.reshape(height, width, 3).astype(np.float32),
        scene=scene,
    )


def render_scene_layers(rng: np.random.Generator, height: int = 96, width: int = 128) -> RoomRender:
    """Sample and render one scene, keeping the clean depth, surface ids and normals."""
    return render(sample_scene(rng, height, width), rng)


def render_scene(
    rng: np.random.Generator, height: int = 96, width: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one random room: ``rgb`` uint8 (H, W, 3), ``depth`` uint16 mm (H, W) with 0 = invalid,
    ``label`` uint8 (H, W) with 0 = void and ids indexing :data:`CLASS_NAMES`."""
    out = render_scene_layers(rng, height, width)
    return out.rgb, out.depth, out.label


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` under ``seed`` (independent of every other scene)."""
    return np.random.default_rng([int(seed), int(index)])


def render_rooms(
    num_scenes: int, seed: int, height: int = 96, width: int = 128, start: int = 0
) -> dict[str, np.ndarray]:
    """Render scenes ``start … start + num_scenes − 1``; scene i depends only on ``(seed, i)``.

    Returns ``{"rgb": (N, H, W, 3) uint8, "depth": (N, H, W) uint16 mm, "label": (N, H, W) uint8}``.
    """
    rgb = np.empty((num_scenes, height, width, 3), dtype=np.uint8)
    depth = np.empty((num_scenes, height, width), dtype=np.uint16)
    label = np.empty((num_scenes, height, width), dtype=np.uint8)
    for n in range(num_scenes):
        rgb[n], depth[n], label[n] = render_scene(scene_rng(seed, start + n), height, width)
    return {"rgb": rgb, "depth": depth, "label": label}


def class_frequencies(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Fraction of pixels of every class id 0 … num_classes − 1 (void included) in ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes)[:num_classes]
    return counts / max(int(counts.sum()), 1)


def colorize_labels(label: np.ndarray) -> np.ndarray:
    """Labels (…) → RGB uint8 (…, 3) with :data:`PALETTE`."""
    return PALETTE[np.asarray(label)]


def save_example_grid(path: str | Path, seed: int = 0, num_scenes: int = 4, height: int = 96, width: int = 128) -> None:
    """Save an rgb | depth | label picture grid of ``num_scenes`` scenes (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    data = render_rooms(num_scenes, seed, height, width)
    fig, axes = plt.subplots(num_scenes, 3, figsize=(9, 2.3 * num_scenes), squeeze=False)
    for n in range(num_scenes):
        depth = np.ma.masked_equal(data["depth"][n].astype(float) / 1000.0, 0.0)
        cmap = plt.get_cmap("viridis").with_extremes(bad="black")
        panels = [(data["rgb"][n], None), (depth, cmap), (colorize_labels(data["label"][n]), None)]
        for ax, (img, cm), title in zip(axes[n], panels, ("rgb", "depth (m, black = invalid)", "label"), strict=True):
            shown = ax.imshow(img, cmap=cm, interpolation="nearest")
            if cm is not None:
                fig.colorbar(shown, ax=ax, fraction=0.035)
            ax.set_xticks([])
            ax.set_yticks([])
            if n == 0:
                ax.set_title(title, fontsize=9)
    handles = [Patch(color=PALETTE[k] / 255.0, label=name) for k, name in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=len(CLASS_NAMES), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
