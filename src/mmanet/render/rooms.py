"""Rendering rooms: one scene (:func:`render`), scene ``i`` of a seed (:func:`render_rooms`), class
frequencies, label colours and a picture grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmanet.render.depth import kinect_depth, window_sensor_depth
from mmanet.render.raycast import camera_rays, cast
from mmanet.render.sampling import sample_scene
from mmanet.render.scene import CLASS_NAMES, NUM_CLASSES, PALETTE, WINDOW, RoomRender, Scene
from mmanet.render.surfaces import albedo_and_label, finish_rgb, shade, void_band


def render(scene: Scene, rng: np.random.Generator) -> RoomRender:
    """Render a given scene; ``rng`` drives only the sensor effects (colour noise, depth noise and
    holes), with a fixed number of draws whatever the scene holds."""
    height, width = scene.camera.height, scene.camera.width
    d = camera_rays(scene.camera)
    hits = cast(scene, scene.camera.position, d)
    albedo, label = albedo_and_label(scene, hits)
    rgb = finish_rgb(rng, scene, shade(scene, hits, albedo))
    shape = (height, width)
    cos_view = (hits.normal * d).sum(axis=0) / np.sqrt((d**2).sum(axis=0))
    sensor_z = window_sensor_depth(scene, hits, d).reshape(shape)
    glass = np.where(label == WINDOW, 0.5, 0.0).reshape(shape)  # reflections on the glass
    depth = kinect_depth(rng, sensor_z, cos_view.reshape(shape), scene.camera.focal, extra_dropout=glass)
    z = hits.t.reshape(shape)
    return RoomRender(
        rgb=rgb,
        depth=depth,
        label=void_band(label.reshape(shape), z),
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
