"""What a synthetic room is: the classes (names, ids, display colours), the room planes, and the scene
description (camera, objects, decals, materials, lighting) with the rendered layers (:class:`RoomRender`)."""

from __future__ import annotations

from dataclasses import dataclass, field

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

#: guards divisions by (near-)zero distances and brightness
EPS = 1e-6


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
