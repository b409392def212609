"""Write a toy dataset in mmanet's npz format: ``python examples/make_npz_dataset.py my_data``."""

import sys
from pathlib import Path

import numpy as np

rng = np.random.default_rng(0)
root = Path(sys.argv[1] if len(sys.argv) > 1 else "my_data")
root.mkdir(parents=True, exist_ok=True)
prototypes = rng.normal(0, 1, (3, 20))  # class means of the audio features
for split, n in [("train", 600), ("val", 200), ("test", 200)]:
    label = rng.integers(0, 3, n)  # 3 classes
    t = np.arange(50)[None, :, None]
    arrays = {
        "accel": np.sin(t * (0.1 + 0.1 * label[:, None, None])) + rng.normal(0, 1.5, (n, 50, 3)),  # (N, T, F)
        "lengths_accel": rng.integers(20, 51, n),  # valid lengths; steps beyond them are padding
        "thermal": rng.normal(0.1 * label[:, None, None, None], 1.0, (n, 1, 16, 16)),  # (N, C, H, W)
        "present_thermal": rng.random(n) > 0.2,  # 20 % of the thermal images are genuinely missing
        "audio": rng.normal(prototypes[label], 2.0),  # (N, F)
    }
    np.savez(root / f"{split}.npz", label=label, **arrays)
(root / "dataset.yaml").write_text("class_names: [walk, run, rest]\n")
