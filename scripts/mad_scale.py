"""α·L_MAD against the task loss at the first epoch MAD runs, for shipped MMANet configurations.

For each configuration this trains the real pipeline (``mmanet train``'s code path) on small data —
the face and RGB-D fixtures in the datasets' own layouts (tests/fixtures_*.py), the generated rooms,
mfeat and AV-digits — up to the first epoch in which MAD has its weight (``mad.start_epoch``), and reads
the epoch means of ``train/mad`` (= α·L_MAD) and ``train/task`` from the run's metrics.csv. The sizes
are CPU sizes (width 4-8, small images), so the numbers say how MAD is weighted against the task at
these sizes, not at the paper's; the relation form and the reduction are the configuration's own.

    .venv/bin/python scripts/mad_scale.py [CONFIG ...] [--out runs/mad_scale] [--markdown table.md]

With no CONFIG: every shipped configs/*/mmanet.yaml. A configuration from another commit (to compare
before and after a change): ``git show OLD:configs/x/mmanet.yaml > old.yaml`` and pass ``old.yaml
--dataset x``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the dataset-layout fixtures

#: per dataset: the overrides that make a run CPU-sized, and the fixture writer (None: generated data)
SMALL: dict[str, list[str]] = {
    "casia_surf": ["data.options.image_size=32", "model.width=8", "data.batch_size=8"],
    "cefa": ["data.options.image_size=32", "model.width=8", "data.batch_size=8"],
    "nyuv2": ["data.options.image_size=[64, 64]", "model.width=4", "data.batch_size=4", "train.lr=0.001"],
    "cityscapes": ["data.options.image_size=[64, 128]", "model.width=4", "data.batch_size=4", "train.lr=0.001"],
    "rooms": [],
    "mfeat": [],
    "av_digits": [],
}
TEACHER_EPOCHS_CAP = 30


def write_fixture(dataset: str, root: Path) -> bool:
    from fixtures_face import write_casia_surf, write_cefa
    from fixtures_segmentation import write_cityscapes, write_nyuv2_prepared

    writers = {
        "casia_surf": write_casia_surf, "cefa": write_cefa, "nyuv2": write_nyuv2_prepared,
        "cityscapes": write_cityscapes,
    }  # fmt: skip
    if dataset not in writers:
        return False
    if not root.exists():
        writers[dataset](root)
    return True


def measure(path: Path, dataset: str, out: Path) -> dict:
    from mmanet.config import load_run_config
    from mmanet.training.runner import run

    overrides = [*SMALL.get(dataset, []), "train.progress_bar=false", "data.num_workers=0", "train.num_threads=1"]
    if write_fixture(dataset, out / "data" / dataset):
        overrides.append(f"data.root={out / 'data' / dataset}")
    config = load_run_config(path, overrides)
    first = config.mad.start_epoch
    teacher_epochs = min(config.teacher.max_epochs or config.train.max_epochs, TEACHER_EPOCHS_CAP)
    overrides += [f"train.max_epochs={first + 1}", f"teacher.max_epochs={teacher_epochs}"]
    if config.mar.mode != "off" and config.mar.warmup_epochs > first:  # MAR is not what is measured here
        overrides.append("mar.mode='off'")  # quoted: YAML reads a bare off as false
    config = load_run_config(path, overrides)
    run_dir = out / "runs" / f"{dataset}_{path.parent.name}_{path.stem}"
    start = time.perf_counter()
    run(config, run_dir, overwrite=run_dir.exists())
    (metrics,) = sorted(run_dir.glob("logs/version_*/metrics.csv"))[-1:]
    with metrics.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/mad") and int(r["epoch"]) == first]
    mad, task = float(rows[0]["train/mad"]), float(rows[0]["train/task"])
    m = config.mad
    return {
        "config": str(path),
        "mad": f"{m.variant}, {m.reduction}, α = {m.alpha:g}, {'+'.join(m.features)}",
        "first MAD epoch": first,
        "α·L_MAD": mad,
        "L_task": task,
        "ratio": mad / task if task else float("nan"),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--dataset", help="the dataset of every CONFIG (default: its folder's name)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "mad_scale")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    configs = args.configs or sorted((ROOT / "configs").glob("*/mmanet.yaml"))
    lines = ["| config | MAD | first MAD epoch | α·L_MAD | L_task | α·L_MAD / L_task |", "|---|---|---|---|---|---|"]
    for path in configs:
        dataset = args.dataset or path.resolve().parent.name
        result = measure(path, dataset, args.out)
        lines.append(
            f"| {result['config']} | {result['mad']} | {result['first MAD epoch']} | {result['α·L_MAD']:.3g} | "
            f"{result['L_task']:.3g} | {result['ratio']:.3g} |"
        )
        print(lines[-1], f"({result['seconds']:.0f} s)", flush=True)
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
