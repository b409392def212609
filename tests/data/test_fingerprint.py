"""The data fingerprint (mmanet.data.fingerprint): what it notices, what it ignores, how it is stored."""

from __future__ import annotations

import hashlib
import os

from mmanet.data.fingerprint import (
    FINGERPRINT_NAME,
    data_change,
    fingerprint,
    read_fingerprint,
    write_fingerprint,
)


def make_data(root):
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.png").write_bytes(b"aaaa")
    (root / "train" / "b.png").write_bytes(b"bbbbbb")
    (root / "list.txt").write_text("train/a.png 0\ntrain/b.png 1\n")
    os.utime(root / "train" / "a.png", ns=(1, 1_000))
    os.utime(root / "train" / "b.png", ns=(1, 2_000))
    os.utime(root / "list.txt", ns=(1, 3_000))
    return root


def test_the_fingerprint_hashes_the_sorted_listing_of_paths_sizes_and_times(tmp_path):
    root = make_data(tmp_path / "D")
    listing = "list.txt\x0028\x003000\ntrain/a.png\x004\x001000\ntrain/b.png\x006\x002000\n"
    fp = fingerprint(root)
    assert fp is not None
    assert (fp.files, fp.bytes) == (3, 28 + 4 + 6)
    assert fp.sha256 == hashlib.sha256(listing.encode()).hexdigest()  # the documented formula, by hand


def test_every_kind_of_change_is_noticed(tmp_path):
    root = make_data(tmp_path / "D")
    first = fingerprint(root)
    (root / "train" / "a.png").write_bytes(b"AAAA")  # same size, new time
    second = fingerprint(root)
    assert second.sha256 != first.sha256 and (second.files, second.bytes) == (first.files, first.bytes)
    (root / "train" / "c.png").write_bytes(b"c")  # a new file
    third = fingerprint(root)
    assert third.files == 4 and third.sha256 != second.sha256
    (root / "train" / "c.png").rename(root / "train" / "d.png")  # a rename, nothing else
    assert fingerprint(root).sha256 != third.sha256


def test_output_directories_inside_the_root_and_the_excluded_run_are_not_data(tmp_path):
    root = make_data(tmp_path / "D")
    before = fingerprint(root)
    run = root / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("x: 1\n")
    assert fingerprint(root, exclude=[run]).sha256 == before.sha256
    bench = root / "bench"
    bench.mkdir()
    (bench / ".lock").touch()  # a locked (mmanet) directory: a benchmark or a study
    (bench / "report.md").write_text("# report\n")
    assert fingerprint(root, exclude=[run]).sha256 == before.sha256
    assert fingerprint(root).sha256 != before.sha256  # the unlocked, unexcluded run is (someone's) data


def test_a_single_file_root_and_a_missing_root(tmp_path):
    data = tmp_path / "x.npz"
    data.write_bytes(b"12345")
    fp = fingerprint(data)
    assert (fp.files, fp.bytes) == (1, 5)
    assert fingerprint(None) is None and fingerprint(tmp_path / "absent") is None


def test_a_symlinked_directory_loop_is_walked_once(tmp_path):
    root = make_data(tmp_path / "D")
    os.symlink(root, root / "train" / "loop")
    fp = fingerprint(root)
    assert fp.files == 3


def test_data_change_says_what_changed_and_is_silent_without_a_record(tmp_path):
    root = make_data(tmp_path / "D")
    run = tmp_path / "run"
    run.mkdir()
    assert data_change(run, root) is None  # a run from before fingerprints: judged by its configuration
    write_fingerprint(run, fingerprint(root))
    assert read_fingerprint(run) == fingerprint(root)
    assert data_change(run, root) is None
    (root / "train" / "c.png").write_bytes(b"c")
    assert f"the data under data.root {root} changed since it was trained (then 3 files, 38 bytes, now 4" in (
        data_change(run, root) or ""
    )
    (root / "train" / "c.png").unlink()
    os.utime(root / "list.txt", ns=(1, 9_000))
    assert "files rewritten or touched" in (data_change(run, root) or "")
    (run / FINGERPRINT_NAME).write_text("{damaged")
    assert read_fingerprint(run) is None and data_change(run, root) is None
    write_fingerprint(run, None)  # data without a root: no record
    assert not (run / FINGERPRINT_NAME).exists()
