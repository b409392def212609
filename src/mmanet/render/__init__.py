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

Scene ``i`` of :func:`render_rooms` depends only on ``(seed, i)``. The package: the scene description
(:mod:`.scene`), random scenes (:mod:`.sampling`), ray casting (:mod:`.raycast`), colour and labels
(:mod:`.surfaces`), the depth sensor (:mod:`.depth`), rendering rooms (:mod:`.rooms`).
"""

from mmanet.render.depth import MAX_RANGE, MIN_RANGE, depth_discontinuities, kinect_depth
from mmanet.render.raycast import camera_rays, cast
from mmanet.render.rooms import (
    class_frequencies,
    colorize_labels,
    render,
    render_rooms,
    render_scene,
    render_scene_layers,
    save_example_grid,
    scene_rng,
)
from mmanet.render.sampling import sample_scene
from mmanet.render.scene import (
    BOX,
    CEILING,
    CLASS_NAMES,
    FLOOR,
    NUM_CLASSES,
    PAINTING,
    PALETTE,
    RUG,
    SPHERE,
    VOID,
    WALL,
    WINDOW,
    RoomRender,
    Scene,
)

__all__ = [
    "BOX",
    "CEILING",
    "CLASS_NAMES",
    "FLOOR",
    "MAX_RANGE",
    "MIN_RANGE",
    "NUM_CLASSES",
    "PAINTING",
    "PALETTE",
    "RUG",
    "SPHERE",
    "VOID",
    "WALL",
    "WINDOW",
    "RoomRender",
    "Scene",
    "camera_rays",
    "cast",
    "class_frequencies",
    "colorize_labels",
    "depth_discontinuities",
    "kinect_depth",
    "render",
    "render_rooms",
    "render_scene",
    "render_scene_layers",
    "sample_scene",
    "save_example_grid",
    "scene_rng",
]
