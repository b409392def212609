"""Three generated datasets in mmanet's npz format, one per input kind, for the npz benchmark.

    python examples/make_npz_kinds.py data/npz_kinds
writes data/npz_kinds/{vector,sequence,image}/{train,val,test}.npz: 4 classes, 3 modalities
each (strong, medium, weak class signal), 10 % of the entries genuinely missing.
"""

import sys
from pathlib import Path

import numpy as np

NUM_CLASSES, SIGNAL, SIZES = 4, {"m1": 1.2, "m2": 0.7, "m3": 0.4}, {"train": 600, "val": 200, "test": 200}


def vector(rng, protos, label, n):
    return {m: s * protos[m][label] + rng.normal(0, 1, (n, 16)) for m, s in SIGNAL.items()}


def sequence(rng, protos, label, n):
    out, t = {}, np.arange(40)[None, :, None]
    for m, s in SIGNAL.items():
        phase = protos[m][label][:, None, :3]  # class-specific phase of 3 channels
        out[m] = s * np.sin(0.3 * t + 3 * phase) + rng.normal(0, 1, (n, 40, 3))
        out[f"lengths_{m}"] = rng.integers(15, 41, n)
    return out


def image(rng, protos, label, n):
    out = {}
    for m, s in SIGNAL.items():
        pattern = protos[m][label][:, :16].reshape(n, 1, 4, 4).repeat(3, axis=2).repeat(3, axis=3)  # 12×12
        out[m] = s * pattern + rng.normal(0, 1, (n, 1, 12, 12))
    return out


def main(root: Path) -> None:
    for kind, make in {"vector": vector, "sequence": sequence, "image": image}.items():
        rng = np.random.default_rng(0)
        protos = {m: rng.normal(0, 1, (NUM_CLASSES, 16)) for m in SIGNAL}
        (root / kind).mkdir(parents=True, exist_ok=True)
        for split, n in SIZES.items():
            label = rng.integers(0, NUM_CLASSES, n)
            arrays = make(rng, protos, label, n)
            present = rng.random((n, 3)) > 0.1
            present[~present.any(1), 0] = True  # never a sample without any modality
            arrays.update({f"present_{m}": present[:, i] for i, m in enumerate(SIGNAL)})
            np.savez(root / kind / f"{split}.npz", label=label, **arrays)
        print(f"wrote {root / kind}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/npz_kinds"))
