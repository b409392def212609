"""Paired transforms: one geometry for all modalities and the label, nearest labels, seeded determinism."""

from __future__ import annotations

import pytest
import torch

from mmanet.data.transforms import (
    VOID,
    ColorJitter,
    Compose,
    Normalize,
    PairedSample,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    RandomScale,
    Resize,
    as_size,
    sample_generator,
)

LABELS = (1, 2, 3, 4)


def pattern(h: int = 24, w: int = 30) -> torch.Tensor:
    """An asymmetric (H, W) 0..255 pattern, so flips and rotations are visible."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return (7 * y + 3 * x + 40 * ((x // 5 + y // 4) % 2)) % 256


def label_map(h: int = 24, w: int = 30) -> torch.Tensor:
    """Quadrant labels 1..4 (blocks, so nearest-neighbour resampling keeps them recognisable)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (1 + (y >= h // 2).long() * 2 + (x >= w // 2).long()).long()


def sample(h: int = 24, w: int = 30) -> PairedSample:
    p = pattern(h, w)
    return PairedSample({"rgb": p.expand(3, h, w).clone(), "depth": p[None].clone(), "ir": p.expand(3, h, w).clone()})


def geometric() -> Compose:
    return Compose([RandomScale(0.8, 1.5), RandomRotation(30.0), RandomCrop(20), RandomHorizontalFlip(0.5)])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(8))
def test_geometry_identical_across_modalities(seed):
    s = sample()
    s.label = label_map()
    out = geometric()(s, gen(seed))
    reference = out.images["depth"][0]
    assert reference.shape == (20, 20)
    for name in ("rgb", "ir"):
        for c in range(3):
            assert torch.equal(out.images[name][c], reference)
    assert out.label.shape == (20, 20) and out.label.dtype == torch.long
    assert set(out.label.unique().tolist()) <= {*LABELS, VOID}


def test_label_moves_with_the_images():
    """Images are the label map scaled up: after random geometry, nearest labels match the images."""
    agreement = []
    for seed in range(6):
        labels = label_map(32, 40)
        image = (labels * 50).float()
        s = PairedSample({"a": image[None].clone(), "b": image.expand(3, -1, -1).clone()}, labels)
        out = geometric()(s, gen(seed))
        valid = out.label != VOID
        assert valid.any()
        decoded = (out.images["a"][0] / 50).round().long()
        agreement.append((decoded[valid] == out.label[valid]).float().mean().item())
    assert min(agreement) > 0.9  # disagreements only at block borders (bilinear vs nearest)


def test_exact_flip_and_crop_move_the_label():
    s = sample()
    s.label = label_map()
    flipped = RandomHorizontalFlip(1.0)(s, gen(0))
    assert torch.equal(flipped.images["rgb"], s.images["rgb"].flip(-1))
    assert torch.equal(flipped.label, s.label.flip(-1))
    for seed in range(4):
        out = RandomCrop((10, 12))(s, gen(seed))
        # find the window: the pattern is unique per position
        matches = [
            (t, left)
            for t in range(24 - 10 + 1)
            for left in range(30 - 12 + 1)
            if torch.equal(s.images["depth"][0, t : t + 10, left : left + 12], out.images["depth"][0])
        ]
        assert len(matches) >= 1
        t, left = matches[0]
        assert torch.equal(out.label, s.label[t : t + 10, left : left + 12])


def test_rotation_is_a_true_rotation():
    square = PairedSample({"a": pattern(16, 16)[None]}, label_map(16, 16))
    out = RandomRotation((90.0, 90.0))(square, gen(0))
    assert torch.allclose(out.images["a"], torch.rot90(square.images["a"], 1, dims=(-2, -1)), atol=1e-3)
    assert torch.equal(out.label, torch.rot90(square.label, 1, dims=(-2, -1)))
    wide = PairedSample({"a": pattern(12, 20)[None]}, label_map(12, 20))  # non-square: no shear
    half = RandomRotation((180.0, 180.0))(wide, gen(0))
    assert torch.allclose(half.images["a"], wide.images["a"].flip(-1).flip(-2), atol=1e-3)
    assert torch.equal(half.label, wide.label.flip(-1).flip(-2))


def test_rotation_fill_and_void():
    s = PairedSample({"a": torch.full((1, 20, 20), 100.0)}, torch.ones(20, 20, dtype=torch.long))
    out = RandomRotation((45.0, 45.0), fill=7.0, label_fill=99)(s, gen(0))
    assert out.label[0, 0] == 99 and out.label[10, 10] == 1
    assert out.images["a"][0, 0, 0] == pytest.approx(7.0, abs=1e-3)
    assert out.images["a"][0, 10, 10] == pytest.approx(100.0, abs=1e-3)
    assert set(out.label.unique().tolist()) == {1, 99}


def test_resize_bilinear_images_nearest_labels():
    s = PairedSample(
        {"rgb": torch.rand(3, 40, 36) * 255, "depth": torch.rand(3, 30, 32) * 255, "ir": torch.rand(3, 28, 28) * 255},
        torch.tensor([[0, 7], [7, 0]]).repeat_interleave(5, 0).repeat_interleave(5, 1),
    )
    out = Resize((16, 12))(s, gen(0))
    assert {k: tuple(v.shape) for k, v in out.images.items()} == {m: (3, 16, 12) for m in ("rgb", "depth", "ir")}
    assert set(out.label.unique().tolist()) == {0, 7}
    small = torch.tensor([[1, 2], [3, 4]])
    up = Resize(4)(PairedSample({"a": small[None].float()}, small), gen(0))
    assert torch.equal(up.label, small.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert up.images["a"].min() >= 1 and up.images["a"].max() <= 4  # bilinear: no overshoot
    assert not torch.equal(up.images["a"][0].round().long(), up.label)  # … and really interpolated


def test_random_scale_draws_one_factor():
    s = PairedSample({"a": torch.zeros(1, 20, 40), "b": torch.zeros(3, 10, 10)}, torch.zeros(20, 40, dtype=torch.long))
    out = RandomScale(0.5, 2.0)(s, gen(3))
    ha, wa = out.images["a"].shape[-2:]
    hb, wb = out.images["b"].shape[-2:]
    assert out.label.shape == (ha, wa)
    assert ha / 20 == pytest.approx(hb / 10, abs=0.1) and wa / 40 == pytest.approx(ha / 20, abs=0.05)


def test_crop_pads_small_images():
    s = PairedSample({"a": torch.full((1, 4, 6), 9.0)}, torch.ones(4, 6, dtype=torch.long))
    out = RandomCrop(8, pad_value=-1.0, label_pad=VOID)(s, gen(0))
    assert out.images["a"].shape == (1, 8, 8) and out.label.shape == (8, 8)
    assert (out.images["a"] == 9.0).sum() == 24 and (out.images["a"] == -1.0).sum() == 64 - 24
    assert (out.label == 1).sum() == 24 and (out.label == VOID).sum() == 64 - 24


def test_crop_needs_equal_sizes():
    s = PairedSample({"a": torch.zeros(1, 10, 10), "b": torch.zeros(1, 12, 10)})
    with pytest.raises(ValueError, match="Resize"):
        RandomCrop(8)(s, gen(0))


def test_deterministic_given_the_generator():
    ops = Compose([geometric(), ColorJitter(0.4, 0.4, 0.4)])
    first = ops(sample(), gen(5))
    again = ops(sample(), gen(5))
    other = ops(sample(), gen(6))
    for name in first.images:
        assert torch.equal(first.images[name], again.images[name])
    assert any(not torch.equal(first.images[n], other.images[n]) for n in first.images)


def test_no_global_rng_use():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    Compose([geometric(), ColorJitter(0.3, 0.3, 0.3)])(sample(), gen(1))
    assert torch.equal(before, torch.get_rng_state())


def test_color_jitter_only_named_modalities():
    s = sample()
    s.images["rgb"] = torch.rand(3, 24, 30) * 255
    out = ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, modalities=("rgb",))(s, gen(0))
    assert not torch.equal(out.images["rgb"], s.images["rgb"])
    assert torch.equal(out.images["depth"], s.images["depth"]) and torch.equal(out.images["ir"], s.images["ir"])
    assert out.images["rgb"].min() >= 0 and out.images["rgb"].max() <= 255
    both = ColorJitter(brightness=0.5, modalities=("rgb", "ir"))(s, gen(0))
    assert not torch.equal(both.images["ir"], s.images["ir"]) and torch.equal(both.images["depth"], s.images["depth"])


def test_brightness_scales():
    s = PairedSample({"rgb": torch.full((3, 4, 4), 100.0)})
    factors = {round(ColorJitter(brightness=0.5)(s, gen(k)).images["rgb"][0, 0, 0].item() / 100, 4) for k in range(5)}
    assert len(factors) == 5 and all(0.5 <= f <= 1.5 for f in factors)


def test_normalize_per_modality():
    s = PairedSample({"rgb": torch.full((3, 2, 2), 255.0), "depth": torch.full((1, 2, 2), 0.0)})
    out = Normalize(127.5, 128.0)(s, gen(0))
    assert out.images["rgb"].allclose(torch.tensor((255 - 127.5) / 128))
    assert out.images["depth"].allclose(torch.tensor(-127.5 / 128))
    only = Normalize([1.0, 2.0, 3.0], [1.0, 1.0, 2.0], modalities=["rgb"])(s, gen(0))
    assert only.images["rgb"][:, 0, 0].tolist() == [254.0, 253.0, 126.0]
    assert torch.equal(only.images["depth"], s.images["depth"])
    with pytest.raises(ValueError, match="std"):
        Normalize(0.0, 0.0)


def test_sizes_and_sample_generator():
    assert as_size(5) == (5, 5) and as_size([3, 4]) == (3, 4)
    for bad in (0, (1, 2, 3), (2, -1), 2.5):
        with pytest.raises(ValueError):
            as_size(bad)
    draws = {
        (s, e, i): torch.rand(4, generator=sample_generator(s, e, i)) for s in (0, 1) for e in (0, 1) for i in (0, 1)
    }
    assert torch.equal(draws[0, 0, 0], torch.rand(4, generator=sample_generator(0, 0, 0)))
    values = [tuple(v.tolist()) for v in draws.values()]
    assert len(set(values)) == len(values)
