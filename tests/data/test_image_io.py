"""read_image: modes, values, and errors that name the file and the context."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmanet.data.base import DataError
from mmanet.data.image_io import read_image


def test_rgb_jpeg_and_grey_replicated(tmp_path):
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    x = read_image(tmp_path / "c.png")
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.full((5, 7), 200.0)) and x[1:].abs().max() == 0
    Image.fromarray(np.full((4, 6), 90, dtype=np.uint8)).save(tmp_path / "g.jpg")
    g = read_image(tmp_path / "g.jpg", "RGB")
    assert g.shape == (3, 4, 6) and torch.equal(g[0], g[2]) and (g - 90).abs().max() <= 2


def test_single_channel_modes(tmp_path):
    depth = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(depth).save(tmp_path / "d.png")
    d = read_image(tmp_path / "d.png", "I;16")
    assert d.shape == (1, 2, 2) and d[0].tolist() == [[0.0, 1000.0], [40000.0, 65535.0]]
    labels = np.array([[0, 3], [40, 255]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "l.png")
    assert read_image(tmp_path / "l.png", "L")[0].tolist() == [[0, 3], [40, 255]]
    palette = Image.fromarray(labels).convert("P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    palette.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png", "L")[0].tolist() == [[0, 3], [40, 255]]  # raw indices


def test_wrong_bit_depth_is_refused(tmp_path):
    Image.fromarray(np.zeros((3, 3, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"mode 'RGB'.*'I;16'.*depth.txt line 2"):
        read_image(tmp_path / "c.png", "I;16", context="depth.txt line 2")
    with pytest.raises(ValueError, match="unknown image mode"):
        read_image(tmp_path / "c.png", "CMYK")


def test_missing_and_corrupt_files_name_file_and_context(tmp_path):
    with pytest.raises(DataError, match=r"not found.*list.txt line 17.*nothere.jpg"):
        read_image(tmp_path / "nothere.jpg", context="list.txt line 17")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match=r"cannot decode.*list.txt line 3.*bad.jpg"):
        read_image(tmp_path / "bad.jpg", context="list.txt line 3")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(DataError, match=r"t.jpg"):
        read_image(tmp_path / "t.jpg", context="x")
