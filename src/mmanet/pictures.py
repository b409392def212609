"""Prediction pictures for segmentation: a PNG grid of rgb, depth, ground truth and the prediction of
every modality combination for a few samples, with a fixed class palette and a legend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

VOID_COLOUR = (0, 0, 0)


def _rgb(colour: np.ndarray) -> tuple[float, float, float]:
    """A uint8 RGB triple as matplotlib's (r, g, b) in [0, 1]."""
    return (float(colour[0]) / 255, float(colour[1]) / 255, float(colour[2]) / 255)


def class_palette(num_classes: int) -> np.ndarray:
    """A fixed ``(K, 3)`` uint8 palette: matplotlib's tab20 colours, then a seeded extension for K > 20."""
    import matplotlib

    base = (np.array(matplotlib.colormaps["tab20"](np.arange(20))[:, :3]) * 255).astype(np.uint8)
    if num_classes <= len(base):
        return base[:num_classes]
    extra = np.random.default_rng(0).integers(0, 256, size=(num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def colourise(labels: np.ndarray, palette: np.ndarray, void: int | None) -> np.ndarray:
    """``(H, W)`` class indices → ``(H, W, 3)`` colours; the void label is black."""
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = (labels >= 0) & (labels < len(palette))
    if void is not None:
        valid &= labels != void
    out[valid] = palette[labels[valid]]
    return out


def _display(image: Tensor) -> np.ndarray:
    """A normalised ``(C, H, W)`` tensor → for display: three channels as an RGB image in [0, 1] (per-image
    min-max); one channel (depth) as its standardised values, drawn with a colour bar."""
    x = image.detach().float().cpu()
    if x.shape[0] != 3:
        return x[0].numpy()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    return x.permute(1, 2, 0).numpy()


def prediction_title(combination) -> str:
    """The column title of a combination's prediction: ``pred: rgb only``, ``pred: rgb + depth``."""
    members = list(combination.members)
    return f"pred: {members[0]} only" if len(members) == 1 else "pred: " + " + ".join(members)


@torch.no_grad()
def segmentation_grid(
    net,
    inputs: dict[str, Tensor],
    present: Tensor,
    target: Tensor,
    combinations: Sequence,
    class_names: Sequence[str],
    path: str | Path,
    ignore_index: int | None = 255,
) -> Path:
    """Write a grid: one row per sample; columns = each input modality, ground truth, and the
    prediction of every combination (``Combination`` objects, evaluated in one batched pass)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    net.eval()
    masks = torch.stack([c.mask() for c in combinations]).to(present.device)
    out = net.predict_all(inputs, present, masks)
    preds = out.logits.argmax(dim=2).cpu().numpy()  # (n_c, B, H, W)
    palette = class_palette(len(class_names))
    modalities = list(net.spec.names)
    n, cols = target.shape[0], len(modalities) + 1 + len(combinations)
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols, 1.8 * n + 0.9), squeeze=False)
    titles = [*modalities, "ground truth", *(prediction_title(c) for c in combinations)]
    for i in range(n):
        panels = [_display(inputs[m][i]) for m in modalities]
        panels.append(colourise(target[i].cpu().numpy(), palette, ignore_index))
        for k in range(len(combinations)):
            ok = bool(out.valid[k, i])
            panels.append(
                colourise(preds[k, i], palette, None) if ok else np.full((*target.shape[1:], 3), 255, np.uint8)
            )
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            shown = ax.imshow(panel, cmap="viridis" if panel.ndim == 2 else None, interpolation="nearest")
            if panel.ndim == 2:  # a one-channel input (depth): its values need a scale
                bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
                bar.ax.tick_params(labelsize=5)
                bar.set_label(f"{modalities[j]} (standardised)", fontsize=5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
    handles = [Patch(color=_rgb(palette[k]), label=name) for k, name in enumerate(class_names)]
    handles.append(Patch(color=_rgb(np.array(VOID_COLOUR)), label="void"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
