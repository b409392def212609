"""Ray casting against the room and its objects, all rays at once: camera rays, the nearest hit (distance,
surface, point, normal) and shadow rays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmanet.render.scene import NUM_PLANES, Box, Camera, Scene, Sphere


# Per-pixel vectors are stored components-first, (3, N), so that every operation runs on
# contiguous rows of N values.
def camera_rays(camera: Camera) -> np.ndarray:
    """World ray directions (3, H·W) through pixel centres, scaled so that the ray parameter is z-depth."""
    j = (np.arange(camera.width) + 0.5 - camera.width / 2) / camera.focal
    i = -(np.arange(camera.height) + 0.5 - camera.height / 2) / camera.focal
    x, y = np.meshgrid(j, i)
    return camera.rotation @ np.stack([x.ravel(), y.ravel(), np.ones(x.size)])


def inverse(d: np.ndarray) -> np.ndarray:
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
class Hits:
    """Per-ray nearest hit: distance (= z-depth for camera rays), surface id, point (3, N), unit normal (3, N)."""

    t: np.ndarray
    surface: np.ndarray
    point: np.ndarray
    normal: np.ndarray


def objects(scene: Scene) -> tuple[Box | Sphere, ...]:
    """Boxes then spheres; object k has surface id NUM_PLANES + k."""
    return (*scene.boxes, *scene.spheres)


def cast(scene: Scene, origin: np.ndarray, d: np.ndarray) -> Hits:
    """Nearest hit of camera rays ``d`` (3, N) from ``origin`` (3,) against the room and every object."""
    inv_d = inverse(d)
    t, surface = _hit_room(scene.size, origin, inv_d)
    o = origin[:, None]
    for k, obj in enumerate(objects(scene)):
        t_obj = _hit_box(obj, o, inv_d) if isinstance(obj, Box) else _hit_sphere(obj, o, d)
        closer = t_obj < t
        t = np.where(closer, t_obj, t)
        surface = np.where(closer, NUM_PLANES + k, surface)
    point = o + t * d
    normal = np.zeros_like(point)
    room = surface < NUM_PLANES
    normal[:, room] = _room_normals(surface[room])
    for k, obj in enumerate(objects(scene)):
        mine = surface == NUM_PLANES + k
        if isinstance(obj, Box):
            normal[:, mine] = _box_normals(obj, point[:, mine])
        else:
            normal[:, mine] = (point[:, mine] - obj.centre[:, None]) / obj.radius
    return Hits(t, surface, point, normal)


def shadowed(scene: Scene, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Whether an object blocks the light for every point (3, N) (shadow rays, all at once)."""
    origin = points + 1e-3 * normals
    to_light = scene.lighting.position[:, None] - origin
    inv = inverse(to_light)
    blocked = np.zeros(points.shape[1], dtype=bool)
    for obj in objects(scene):
        t_obj = _hit_box(obj, origin, inv) if isinstance(obj, Box) else _hit_sphere(obj, origin, to_light)
        blocked |= t_obj < 1.0
    return blocked
