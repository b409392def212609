"""Decode image files with Pillow into ``(C, H, W)`` float tensors (0..255 or raw 16-bit values).

Every failure is a :class:`~mmanet.data.base.DataError` that names the file and the caller's
context (for example ``"test_private_list.txt line 17"``), so a bad entry in a list of
tens of thousands of images can be found and fixed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from mmanet.data.base import DataError

#: Pillow modes accepted per requested mode (anything else is refused rather than silently converted)
_ACCEPTED = {
    # 8 bits per channel, converted to 3 channels (grey replicated, alpha dropped); 16-bit and float
    # images would be clipped at 255 or rounded, so they are refused like lossy depth conversions
    "RGB": ("RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"),
    "L": ("L", "P", "1"),  # 8-bit single channel; palette images keep their raw indices (label maps)
    "I;16": ("I;16", "I;16L", "I;16B", "I;16N", "I"),  # 16-bit single channel (depth in millimetres …)
}
MODES = tuple(_ACCEPTED)
#: a raw mode Pillow decodes into 8-bit ``RGB`` although the file holds more bits (48-bit PNG/TIFF …)
_DEEP_RAWMODE = re.compile(r";(16|32)")


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
            deep = _deeper_than_its_mode(image)  # (only visible before decoding)
            image.load()  # decode now, so truncated or corrupt data fails here
            array = _to_array(image, mode, where, deep)
    except FileNotFoundError:
        raise DataError(f"image file not found ({where})") from None
    except Image.DecompressionBombError as err:
        raise DataError(
            f"image too large to decode safely ({where}): {err} Pillow refuses it as a possible decompression bomb; "
            "shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS in your own code if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot decode image ({where}): {err}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()


def _deeper_than_its_mode(image: Image.Image) -> bool:
    """The file holds more than 8 bits per channel although Pillow opens it as an 8-bit mode."""
    for tile in getattr(image, "tile", None) or ():
        args = getattr(tile, "args", None) if hasattr(tile, "args") else (tile[3] if len(tile) > 3 else None)
        rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(rawmode, str) and _DEEP_RAWMODE.search(rawmode):
            return True
    return False


def _to_array(image: Image.Image, mode: str, where: str, deep: bool = False) -> np.ndarray:
    accepted = _ACCEPTED[mode]
    if mode == "RGB" and (image.mode not in accepted or deep):
        kind = "a 16-bit or float" if deep or image.mode.startswith(("I", "F")) else f"a {image.mode!r}"
        raise DataError(
            f"{kind} image (Pillow mode {image.mode!r}{', more than 8 bits per channel' if deep else ''}) was given "
            f"for an RGB modality, which takes 8-bit images (accepted modes: {list(accepted)}); converting it would "
            f"clip or round its values. Convert it to 8-bit RGB with the scaling your data needs ({where})"
        )
    if image.mode not in accepted:
        raise DataError(
            f"image has Pillow mode {image.mode!r} but {mode!r} was requested (accepted: {list(accepted)}) ({where})"
        )
    if mode == "RGB":
        return np.asarray(image.convert("RGB"))
    if image.mode == "1":
        image = image.convert("L")
    return np.asarray(image).astype(np.float32)
