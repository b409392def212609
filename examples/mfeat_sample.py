"""Write raw UCI Multiple Features samples as an .npz that `mmanet predict` (and load_model) take.

    python examples/mfeat_sample.py sample.npz                 # 8 test samples, every view
    python examples/mfeat_sample.py sample.npz --rows 3 --without pix --without mor
    mmanet predict runs/m1 --input sample.npz

The rows come from the test split of the seeded 60/20/20 split every mfeat config uses (data.split_seed,
default 0), as the data files hold them (raw: the model applies its stored normalisation). A view left
out with --without is simply not in the file: the model treats it as missing. The true labels are stored
as `label` (predict ignores it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mmanet.data import mfeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .npz to write (refused if it exists)")
    parser.add_argument("--rows", type=int, default=8, help="number of test samples (default 8)")
    parser.add_argument("--split-seed", type=int, default=0, help="data.split_seed of the model (default 0)")
    parser.add_argument("--without", action="append", default=[], choices=list(mfeat.MODALITIES))
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another file name")
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    arrays, labels = mfeat.raw_split("test", args.split_seed)
    keep = {m: a[: args.rows].astype(np.float32) for m, a in arrays.items() if m not in args.without}
    if not keep:
        parser.error("--without removes every view; keep at least one")
    np.savez(args.out, **keep, label=labels[: args.rows])
    print(f"wrote {args.out}: {min(args.rows, len(labels))} samples, views {', '.join(keep)}")


if __name__ == "__main__":
    main()
