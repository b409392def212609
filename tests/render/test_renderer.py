"""The synthetic RGB-D rooms generator: determinism, contract, class coverage, complementary
modalities (counterfactual renders without decals) and the Kinect-like depth model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmanet import render as rr

NUM_SCENES = 50


@pytest.fixture(scope="module")
def layers() -> list[rr.RoomRender]:
    """50 rendered scenes with their clean layers (about half a second)."""
    return [rr.render_scene_layers(rr.scene_rng(0, i)) for i in range(NUM_SCENES)]


def without(scene: rr.Scene, kinds: set[int]) -> rr.Scene:
    """The same scene with the decals of the given classes removed."""
    return dataclasses.replace(scene, decals=tuple(d for d in scene.decals if d.kind not in kinds))


def rerender(scene: rr.Scene, seed: int, kinds: set[int] | None = None) -> rr.RoomRender:
    """Render ``scene`` (minus decals of ``kinds``) with sensor noise from a fixed generator."""
    return rr.render(without(scene, kinds or set()), np.random.default_rng(seed))


def test_contract_shapes_and_dtypes():
    data = rr.render_rooms(3, seed=1, height=48, width=64)
    assert data["rgb"].shape == (3, 48, 64, 3) and data["rgb"].dtype == np.uint8
    assert data["depth"].shape == (3, 48, 64) and data["depth"].dtype == np.uint16
    assert data["label"].shape == (3, 48, 64) and data["label"].dtype == np.uint8
    assert data["label"].max() < len(rr.CLASS_NAMES)
    assert rr.CLASS_NAMES[0] == "void" and len(rr.CLASS_NAMES) == len(rr.PALETTE)
    rgb, depth, label = rr.render_scene(np.random.default_rng(0))
    assert rgb.shape == (96, 128, 3) and depth.shape == label.shape == (96, 128)
    assert 300 < np.median(depth[depth > 0]) < 10_000  # millimetres


def test_deterministic_by_seed():
    a, b, c = rr.render_rooms(3, seed=7), rr.render_rooms(3, seed=7), rr.render_rooms(3, seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])


def test_scene_depends_only_on_seed_and_index():
    batch = rr.render_rooms(4, seed=5)
    alone = rr.render_scene(np.random.default_rng([5, 2]))
    window = rr.render_rooms(2, seed=5, start=2)
    for k, key in enumerate(("rgb", "depth", "label")):
        np.testing.assert_array_equal(batch[key][2], alone[k])
        np.testing.assert_array_equal(batch[key][2:], window[key])


def test_every_class_appears(layers):
    counts = np.bincount(np.concatenate([s.label.ravel() for s in layers]), minlength=rr.NUM_CLASSES)
    assert (counts > 0).all(), dict(zip(rr.CLASS_NAMES, counts.tolist(), strict=True))
    freq = rr.class_frequencies(np.stack([s.label for s in layers]))
    assert freq.sum() == pytest.approx(1.0)
    assert freq[rr.VOID] < 0.08  # void is only a thin band
    assert freq[rr.WALL] > 0.2 and freq[rr.FLOOR] > 0.03


def test_class_frequencies():
    freq = rr.class_frequencies(np.array([[0, 1], [1, 3]]), num_classes=5)
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.0, 0.25, 0.0])


@pytest.mark.parametrize("kind", [rr.PAINTING, rr.RUG])
def test_paintings_and_rugs_are_visible_only_in_rgb(layers, kind):
    """Removing them leaves depth (clean and measured) untouched but changes the colour."""
    seen = 0
    for i, out in enumerate(layers):
        mask = out.label == kind
        if mask.sum() < 20:
            continue
        seen += 1
        full, bare = rerender(out.scene, i), rerender(out.scene, i, {kind})
        np.testing.assert_array_equal(full.depth, bare.depth)
        np.testing.assert_array_equal(full.depth_clean, bare.depth_clean)
        host = rr.WALL if kind == rr.PAINTING else rr.FLOOR
        assert (bare.label[mask] == host).all()
        change = np.abs(full.rgb[mask].astype(int) - bare.rgb[mask].astype(int)).sum(axis=-1)
        assert change.mean() > 40
    assert seen >= 5


def test_windows_look_like_wall_but_have_invalid_or_far_depth(layers):
    """Removing windows leaves the colour untouched; their depth is mostly invalid, else far behind the wall."""
    seen = 0
    for i, out in enumerate(layers):
        mask = out.label == rr.WINDOW
        if mask.sum() < 20:
            continue
        seen += 1
        full, bare = rerender(out.scene, i), rerender(out.scene, i, {rr.WINDOW})
        np.testing.assert_array_equal(full.rgb, bare.rgb)
        assert (bare.label[mask] == rr.WALL).all()
        measured = full.depth[mask] / 1000.0
        valid = measured > 0
        assert 1 - valid.mean() > 0.4
        assert (measured[valid] > full.depth_clean[mask][valid] + 1.0).all()
        wall_near = (bare.depth[mask] > 0) & (np.abs(bare.depth[mask] / 1000.0 - full.depth_clean[mask]) < 0.3)
        assert wall_near.mean() > 0.5  # without the window the same pixels read as wall
    assert seen >= 5


def test_boxes_and_spheres_share_a_colour_distribution(layers):
    boxes = np.stack([b.albedo for out in layers for b in out.scene.boxes])
    spheres = np.stack([s.albedo for out in layers for s in out.scene.spheres])
    assert len(boxes) > 30 and len(spheres) > 30
    np.testing.assert_allclose(boxes.mean(axis=0), spheres.mean(axis=0), atol=0.1)
    np.testing.assert_allclose(boxes.std(axis=0), spheres.std(axis=0), atol=0.08)


def test_depth_noise_and_quantisation_grow_with_distance():
    rng = np.random.default_rng(0)
    for z, low, high in ((1.0, 0.5, 4.0), (4.0, 15.0, 60.0)):
        plane = np.full((64, 64), z)
        mm = rr.kinect_depth(rng, plane, np.ones_like(plane), focal=110.0)
        valid = mm[mm > 0].astype(float)
        assert valid.size > 0.9 * plane.size
        assert abs(valid.mean() - 1000 * z) < 0.02 * 1000 * z
        assert low < valid.std() < high, (z, valid.std())
        steps = np.diff(np.unique(valid))
        assert steps.min() > (0.01 if z > 3 else 0.0)  # disparity quantisation: cm steps at 4 m
    assert rr.kinect_depth(rng, np.full((4, 4), 12.0), np.ones((4, 4)), focal=110.0).max() == 0  # out of range


def test_depth_noise_in_rendered_scenes_grows_with_distance(layers):
    near, far = [], []
    for out in layers:
        ok = (out.depth > 0) & np.isin(out.label, (rr.WALL, rr.FLOOR, rr.CEILING))
        err = out.depth[ok] / 1000.0 - out.depth_clean[ok]
        z = out.depth_clean[ok]
        near.append(err[(z > 1.0) & (z < 2.0)])
        far.append(err[(z > 4.0) & (z < 6.0)])
    near_std, far_std = np.std(np.concatenate(near)), np.std(np.concatenate(far))
    assert far_std > 4 * near_std, (near_std, far_std)


def test_holes_at_depth_edges_and_random_dropout(layers):
    at_edge, elsewhere = [], []
    for out in layers:
        dh, dv = rr.depth_discontinuities(out.depth_clean)
        edge = np.zeros(out.depth.shape, dtype=bool)
        edge[:, :-1] |= dh
        edge[:, 1:] |= dh
        edge[:-1] |= dv
        edge[1:] |= dv
        interior = ~edge & (out.label != rr.WINDOW) & (out.depth_clean < rr.MAX_RANGE)
        at_edge.append(out.depth[edge] == 0)
        elsewhere.append(out.depth[interior] == 0)
    edge_rate, other_rate = np.concatenate(at_edge).mean(), np.concatenate(elsewhere).mean()
    assert edge_rate > 0.8
    assert 0.001 < other_rate < 0.1  # random dropout exists but stays sparse


def test_void_is_a_thin_band_at_boundaries(layers):
    """Void pixels sit between two different classes (a one-pixel band), never inside a region."""
    between = []
    for out in layers[:10]:
        padded = np.pad(out.label, 1, mode="edge")
        h, w = out.label.shape
        window = np.stack([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
        classes = [np.unique(px[px != rr.VOID]).size for px in window[:, out.label == rr.VOID].T]
        between.append(np.array(classes) >= 2)
    assert np.concatenate(between).mean() > 0.95


def test_example_grid_is_written(tmp_path):
    path = tmp_path / "grid.png"
    rr.save_example_grid(path, seed=0, num_scenes=2, height=32, width=40)
    assert path.stat().st_size > 1000
