"""Decode image files with Pillow into ``(C, H, W)`` float tensors (0..255 or raw 16-bit values).

Every failure is a :class:`~mmanet.data.base.DataError` that names the file and the caller's
context (for example ``"test_private_list.txt line 17"``), so a bad entry in a list of
tens of thousands of images can be found and fixed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from mmanet.data.base import DataError

#: Pillow modes accepted per requested mode (anything else is refused rather than silently converted)
_ACCEPTED = {
    "RGB": None,  # any mode, converted to 3 channels (grey images are replicated)
    "L": ("L", "P", "1"),  # 8-bit single channel; palette images keep their raw indices (label maps)
    "I;16": ("I;16", "I;16L", "I;16B", "I;16N", "I"),  # 16-bit single channel (depth in millimetres …)
}
MODES = tuple(_ACCEPTED)


def _where(path: Path, context: str) -> str:
    return f"{context}: {path}" if context else str(path)


def read_image(path: str | Path, mode: str = "RGB", context: str = "") -> Tensor:
    """Read one image as a ``(C, H, W)`` float32 tensor.

    ``mode``: ``"RGB"`` (3 channels, 0..255; CASIA-SURF/CeFA depth and IR are 3-channel
    JPEGs and stay so), ``"L"`` (1 channel, 0..255, for 8-bit label maps or grey images) or
    ``"I;16"`` (1 channel, raw 16-bit values 0..65535, for 16-bit PNG depth). A file whose
    bit depth does not fit ``"L"``/``"I;16"`` is an error, never a lossy conversion.
    """
    if mode not in _ACCEPTED:
        raise ValueError(f"unknown image mode {mode!r}; valid: {list(MODES)}")
    path = Path(path)
    where = _where(path, context)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncated or corrupt data fails here
            array = _to_array(image, mode, where)
    except FileNotFoundError:
        raise DataError(f"image file not found ({where})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot decode image ({where}): {err}") from err
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()


def _to_array(image: Image.Image, mode: str, where: str) -> np.ndarray:
    accepted = _ACCEPTED[mode]
    if accepted is None:
        return np.asarray(image.convert("RGB"))
    if image.mode not in accepted:
        raise DataError(
            f"image has Pillow mode {image.mode!r} but {mode!r} was requested (accepted: {list(accepted)}) ({where})"
        )
    if image.mode == "1":
        image = image.convert("L")
    return np.asarray(image).astype(np.float32)
