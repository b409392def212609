"""Random scenes: room size, camera, boxes and spheres, wall decals (paintings, windows), a rug, materials
and lighting, all drawn from one generator (:func:`sample_scene`)."""

from __future__ import annotations

import numpy as np

from mmanet.render.scene import (
    EPS,
    PAINTING,
    PLANE_FLOOR,
    PLANE_X0,
    PLANE_X1,
    RUG,
    WALL_PLANES,
    WINDOW,
    Box,
    Camera,
    Decal,
    Lighting,
    Materials,
    Scene,
    Sphere,
)


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
    # set by the first try: a distance between two finite colours is >= 0 > -1
    assert best is not None
    return best


def _sample_room(rng: np.random.Generator) -> np.ndarray:
    """Room extent (x, height, z) in metres."""
    return np.array([rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.2), rng.uniform(3.0, 7.0)])


def _ray_to_room(size: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> tuple[float, int]:
    """Distance and plane id where one ray from inside the room leaves it."""
    t = np.where(direction > 0, (size - origin) / np.maximum(direction, EPS), origin / np.maximum(-direction, EPS))
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


def _sampleobjects(
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
    boxes, spheres = _sampleobjects(rng, size, camera)
    materials = _sample_materials(rng)
    decals = _sample_wall_decals(rng, size, camera, materials.wall)
    if rng.random() < 0.75:
        decals.append(_sample_rug(rng, size, camera, materials.floor))
    lighting = _sample_lighting(rng, size)
    return Scene(size, camera, boxes, spheres, tuple(decals), materials, lighting)
