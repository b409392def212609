"""Issue 12 case 14: ``mmanet predict`` on raw inputs with any subset of modalities (run, ckpt, safetensors, onnx)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mmanet.cli import app
from mmanet.config import resolve_run_config
from mmanet.deploy import load_model
from mmanet.deploy.export import export_model
from mmanet.deploy.inputs import InputError, ModelInputs, RawBatch
from mmanet.deploy.predict import Predictor, load_predictor, predict, predict_batch, softmax
from mmanet.modality import ModalitySpec
from mmanet.outputs import OutputPathError
from mmanet.pictures import class_palette
from mmanet.training import run
from mmanet.training.factory import load_bundle
from tests_helpers import make_raw_npz_dataset, npz_run_config

pytest.importorskip("onnxruntime")
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    config = resolve_run_config(npz_run_config(make_raw_npz_dataset(root / "data")))
    run(config, root / "run")
    export_model(root / "run", root / "export" / "model.onnx")
    return root, config


def raw_test(root, rows=slice(0, 8)) -> dict[str, np.ndarray]:
    with np.load(root / "data" / "test.npz") as f:
        return {k: f[k][rows] for k in f.files if k != "label"}


@pytest.mark.parametrize("form", ["run", "ckpt", "safetensors", "onnx"])
def test_every_model_form_gives_the_evaluated_probabilities(model, form):
    root, config = model
    path = {
        "run": root / "run",
        "ckpt": root / "run" / "checkpoints" / "best.ckpt",
        "safetensors": root / "export" / "model.safetensors",
        "onnx": root / "export" / "model.onnx",
    }[form]
    records = predict(path, raw_test(root))
    test = load_bundle(config).test  # standardised by the loader, as evaluate sees it
    net = load_model(root / "run").standardised_net
    with torch.no_grad():
        inputs = {**{m: v[:8] for m, v in test.arrays.items()}, "lengths_seq": test.lengths["seq"][:8]}
        expected = softmax(net(inputs, test.present[:8]).numpy())
    assert len(records) == 8
    for i, record in enumerate(records):
        assert record["present"] == [m for m, p in zip(("vec", "seq", "img"), test.present[i], strict=True) if p]
        got = [record["probabilities"][c] for c in ("0", "1", "2")]
        np.testing.assert_allclose(got, expected[i], atol=1e-5)
        assert record["predicted"] == int(expected[i].argmax())
        assert record["predicted_class"] == str(record["predicted"])


def test_cli_reads_npz_files_with_any_subset_and_writes_json_lines(model, tmp_path):
    root, _ = model
    only_vec = {"vec": raw_test(root)["vec"][:3]}
    np.savez(tmp_path / "vec.npz", **only_vec)
    np.savez(tmp_path / "one.npz", seq=np.ones((6, 2)), lengths_seq=np.array(4))  # one sample, 4 valid steps
    result = runner.invoke(app, ["predict", str(root / "export" / "model.onnx"), "--input", str(tmp_path / "vec.npz")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["present"] for r in lines] == [["vec"]] * 3 and lines[0]["source"].endswith("vec.npz")
    out = tmp_path / "preds.jsonl"
    args = ["predict", str(root / "run"), "--input", str(tmp_path / "vec.npz"), "--input", str(tmp_path / "one.npz")]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and records[-1]["present"] == ["seq"] and "4 prediction(s) written" in result.output


def test_image_files_are_read_and_resized_to_the_model_input(model, tmp_path):
    root, _ = model
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    result = runner.invoke(app, ["predict", str(root / "run"), "--input", f"img={tmp_path / 'img.png'}"])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["present"] == ["img"]
    from mmanet.data.transforms import resize_image

    resized = resize_image(torch.from_numpy(pixels).float()[None], (6, 6)).numpy()
    assert record["probabilities"] == predict(root / "run", {"img": resized})[0]["probabilities"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"depth": np.zeros(5)}, "unknown modality 'depth'; the model takes ['vec', 'seq', 'img']"),
        ({"vec": np.zeros(4)}, "'vec' has shape (4,); the model takes (5,) per sample"),
        ({"vec": np.zeros((2, 5), dtype=bool)}, "'vec' must hold numbers"),
        ({"vec": np.array(["a"] * 5)}, "'vec' must hold numbers"),
        ({}, "no modality given"),
        ({"vec": np.zeros(5), "present_vec": False}, "sample 0 has no modality present"),
        ({"vec": np.full(5, np.nan)}, "'vec' has NaN or infinite values in 1 present sample(s)"),
        ({"seq": np.zeros((6, 2)), "lengths_seq": 9}, "lengths_seq must be in 1..6"),
        ({"vec": np.zeros(5), "lengths_vec": 2}, "lengths_vec is given but 'vec' is not a sequence"),
        ({"vec": np.zeros((2, 5)), "img": np.zeros((3, 1, 6, 6))}, "different numbers of samples"),
    ],
)
def test_bad_inputs_are_clear_errors(model, inputs, message):
    root, _ = model
    with pytest.raises(InputError) as err:
        predict(load_predictor(root / "run"), inputs)
    assert message in str(err.value)


def test_bad_inputs_exit_2_from_the_cli(model, tmp_path):
    root, _ = model
    np.savez(tmp_path / "nan.npz", vec=np.full((2, 5), np.inf))
    cases = [
        (["--input", str(tmp_path / "nan.npz")], "NaN or infinite"),
        (["--input", str(tmp_path / "missing.npz")], "does not exist"),
        (["--input", f"vec={tmp_path / 'x.png'}"], "'vec' takes (5,) per sample, not an image"),
        (["--input", f"rgb={tmp_path / 'x.png'}"], "unknown modality 'rgb'"),
        ([], "no --input given"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["predict", str(root / "run"), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    result = runner.invoke(app, ["predict", str(tmp_path), "--input", str(tmp_path / "nan.npz")])
    assert result.exit_code == 2 and "not an mmanet run directory" in result.output


def test_segmentation_writes_label_maps_next_to_the_output(tmp_path):
    spec = ModalitySpec(("rgb",))
    logits = torch.zeros(2, 3, 4, 5)
    logits[0, 2], logits[1, 1, :2] = 1.0, 1.0

    predictor = Predictor(ModelInputs(spec, {"rgb": (3, 4, 5)}), ["void", "wall", "floor"], "segmentation", None)
    predictor._run = lambda batch: logits[: len(batch)].numpy()
    batch = RawBatch("scene.npz", {"rgb": np.zeros((2, 3, 4, 5), np.float32)}, np.ones((2, 1), bool), {})
    records = predict_batch(predictor, batch, tmp_path)
    assert records[0]["pixels_per_class"] == {"floor": 20}
    assert records[1]["pixels_per_class"] == {"void": 10, "wall": 10}
    label_map = np.asarray(Image.open(records[1]["label_map"]))
    assert label_map.shape == (4, 5) and set(np.unique(label_map)) == {0, 1}
    # issue 23: a palette PNG — the indices read back as they are, and a viewer shows the grids' class colours
    with Image.open(records[1]["label_map"]) as image:
        assert image.mode == "P"
        shown = np.asarray(image.convert("RGB"))
    assert (shown[label_map == 1] == class_palette(3)[1]).all() and (shown[label_map == 0] == class_palette(3)[0]).all()
    with pytest.raises(InputError, match="pass --out"):
        predict(predictor, {"rgb": np.zeros((3, 4, 5))})
    # issue 20: a rerun replaces its own maps, never a file predict did not write
    predict_batch(predictor, batch, tmp_path)
    (tmp_path / "scene_00001_labels.png").write_bytes(b"my picture")
    with pytest.raises(OutputPathError, match="scene_00001_labels.png already exists and is not a label map"):
        predict_batch(predictor, batch, tmp_path)
    assert (tmp_path / "scene_00001_labels.png").read_bytes() == b"my picture"
    # two inputs of one command never write the same maps
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        np.savez(tmp_path / folder / "scene.npz", rgb=np.zeros((2, 3, 4, 5), np.float32))
    twice = [str(tmp_path / "one" / "scene.npz"), str(tmp_path / "two" / "scene.npz")]
    with pytest.raises(InputError, match=r"two inputs would write the same label maps \(scene_\*_labels.png\)"):
        predict(predictor, twice, label_map_dir=tmp_path / "maps")
    assert not (tmp_path / "maps").exists()
