"""What each pixel shows: procedural textures and decals give its albedo and class label, a point light
with hard shadows shades it, and a camera finish (exposure, white balance, vignetting, noise) makes the
RGB image; the void band where objects and decals meet other classes."""

from __future__ import annotations

import numpy as np

from mmanet.render.raycast import Hits, objects, shadowed
from mmanet.render.scene import (
    BOX,
    CEILING,
    EPS,
    FLOOR,
    NUM_PLANES,
    PAINTING,
    PLANE_CEILING,
    PLANE_FLOOR,
    PLANE_X0,
    PLANE_X1,
    RUG,
    SPHERE,
    VOID,
    WALL,
    WALL_PLANES,
    Decal,
    Scene,
)


def plane_uv(point: np.ndarray, surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) on the room planes for points (3, N): walls u = z or x, v = height; floor/ceiling u = x, v = z."""
    x_wall = (surface == PLANE_X0) | (surface == PLANE_X1)
    horizontal = (surface == PLANE_FLOOR) | (surface == PLANE_CEILING)
    return np.where(x_wall, point[2], point[0]), np.where(horizontal, point[2], point[1])


def decal_masks(
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
    colours = np.array([o.albedo for o in objects(scene)])
    grain = 1.0 + 0.03 * np.sin(point[0] * 40.0) * np.sin(point[1] * 37.0 + point[2] * 23.0)
    return colours[surface - NUM_PLANES] * grain[:, None]


def _structure_label(scene: Scene, surface: np.ndarray) -> np.ndarray:
    """Labels from geometry alone (decals not yet applied)."""
    lut = np.array([WALL, WALL, FLOOR, CEILING, WALL, WALL] + [BOX] * len(scene.boxes) + [SPHERE] * len(scene.spheres))
    return lut[surface].astype(np.uint8)


def albedo_and_label(scene: Scene, hits: Hits) -> tuple[np.ndarray, np.ndarray]:
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
    for dec, mask, s, t in decal_masks(scene, surface, u, v):
        if not mask.any():
            continue
        label[mask] = dec.kind
        if dec.kind == PAINTING:
            albedo[mask] = _painting_albedo(dec, s[mask], t[mask])
        elif dec.kind == RUG:
            albedo[mask] = _rug_albedo(dec, u[mask], v[mask])
    return np.clip(albedo, 0.0, 1.0), label


def shade(scene: Scene, hits: Hits, albedo: np.ndarray) -> np.ndarray:
    """Lambertian point light with hard shadows and distance falloff, plus a sky-like ambient term."""
    light = scene.lighting
    to_light = light.position[:, None] - hits.point
    dist = np.sqrt((to_light**2).sum(axis=0))
    cos = np.maximum((hits.normal * to_light).sum(axis=0) / np.maximum(dist, EPS), 0.0)
    lit = ~shadowed(scene, hits.point, hits.normal)
    direct = light.diffuse * cos * lit / (1.0 + (dist / light.falloff) ** 2)
    ambient = light.ambient * (0.85 + 0.15 * hits.normal[1])
    return albedo * (ambient + direct)[:, None]


def finish_rgb(rng: np.random.Generator, scene: Scene, radiance: np.ndarray) -> np.ndarray:
    """Auto-exposure, white balance, vignetting, gamma and sensor noise → uint8 (H, W, 3)."""
    cam, light = scene.camera, scene.lighting
    gain = np.clip(light.exposure / max(float(radiance.mean()), EPS), 0.7, 3.0)
    img = radiance.reshape(cam.height, cam.width, 3) * (gain * light.white_balance)
    yy, xx = np.mgrid[0 : cam.height, 0 : cam.width]
    r2 = ((xx - cam.width / 2) ** 2 + (yy - cam.height / 2) ** 2) / (0.25 * (cam.width**2 + cam.height**2))
    img = img * (1.0 - 0.25 * r2)[..., None]
    img = np.clip(img, 0.0, 1.0) ** (1 / 1.4) * 255.0
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * 2.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def void_band(label: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Leave a one-pixel unlabelled band where an object or decal meets another class (like
    NYUv2 annotations): of each differing neighbour pair the farther pixel (ties: the later one)
    becomes void. Boundaries among wall/floor/ceiling stay labelled."""
    structural = label <= CEILING
    out = label.copy()
    for axis in (0, 1):
        first = [slice(None)] * 2
        second = [slice(None)] * 2
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(first), tuple(second)
        boundary = (label[a] != label[b]) & ~(structural[a] & structural[b])
        first_farther = z[a] > z[b] + 1e-3
        out[a][boundary & first_farther] = VOID
        out[b][boundary & ~first_farther] = VOID
    return out
