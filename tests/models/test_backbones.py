"""Backbone building blocks: torchvision key compatibility and the weight loader (on fabricated
torchvision-format ResNet-18 and ResNet-50 state_dicts — torchvision itself is not installed), the
bottleneck block, ESANet pieces' shapes and gradients, and the parameter counts (SF as quoted in
BASELINES.md, the ResNet-50 trunk as torchvision's)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmanet.models.backbones import (
    RESNET_BLOCKS,
    RESNET_LAYERS,
    BasicBlock,
    Bottleneck,
    DecoderModule,
    LearnedUpsample,
    NonBottleneck1D,
    PyramidPoolingContext,
    SkipAdapter,
    SqueezeExcitation,
    StateDictMismatchError,
    adaptive_avg_pool2d,
    init_resnet_weights,
    load_state_dict_file,
    load_torchvision_resnet,
    make_layer,
    resize_bilinear,
    resnet_layers,
    resnet_stem,
    resnet_widths,
    torchvision_resnet_depth,
)

# --------------------------------------------------------------------------------------------
# A torchvision ResNet-18 state_dict, key set written out by hand
# --------------------------------------------------------------------------------------------

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in _BN]


def torchvision_resnet18_shapes(width: int = 64, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Key → shape of torchvision's ``resnet18().state_dict()`` (scaled by ``width``)."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (width, 3, 7, 7)}
    for key in _bn_keys("bn1"):
        shapes[key] = () if key.endswith("num_batches_tracked") else (width,)
    in_ch = width
    for layer, out_ch in zip((1, 2, 3, 4), resnet_widths(width), strict=True):
        for block in (0, 1):
            p = f"layer{layer}.{block}"
            block_in = in_ch if block == 0 else out_ch
            shapes[f"{p}.conv1.weight"] = (out_ch, block_in, 3, 3)
            shapes[f"{p}.conv2.weight"] = (out_ch, out_ch, 3, 3)
            for bn in ("bn1", "bn2"):
                for key in _bn_keys(f"{p}.{bn}"):
                    shapes[key] = () if key.endswith("num_batches_tracked") else (out_ch,)
            if block == 0 and layer > 1:  # downsample in layer2..4 block 0
                shapes[f"{p}.downsample.0.weight"] = (out_ch, block_in, 1, 1)
                for key in _bn_keys(f"{p}.downsample.1"):
                    shapes[key] = () if key.endswith("num_batches_tracked") else (out_ch,)
        in_ch = out_ch
    shapes["fc.weight"] = (num_classes, 8 * width)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def torchvision_resnet50_shapes(width: int = 64, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Key → shape of torchvision's ``resnet50().state_dict()`` (scaled by ``width``).

    Bottleneck blocks (3, 4, 6, 3); in layer N the 1×1 → 3×3 → 1×1 convs have ``planes =
    width · 2^(N-1)`` channels and the block outputs ``4 · planes``; block 0 of EVERY layer has a
    downsample (layer1's changes 64 → 256 channels at stride 1).
    """

    def bn(prefix: str, channels: int) -> None:
        for key in _bn_keys(prefix):
            shapes[key] = () if key.endswith("num_batches_tracked") else (channels,)

    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (width, 3, 7, 7)}
    bn("bn1", width)
    in_ch = width
    for layer, blocks, planes in ((1, 3, width), (2, 4, 2 * width), (3, 6, 4 * width), (4, 3, 8 * width)):
        out_ch = 4 * planes
        for block in range(blocks):
            p = f"layer{layer}.{block}"
            block_in = in_ch if block == 0 else out_ch
            shapes[f"{p}.conv1.weight"] = (planes, block_in, 1, 1)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.conv3.weight"] = (out_ch, planes, 1, 1)
            bn(f"{p}.bn3", out_ch)
            if block == 0:
                shapes[f"{p}.downsample.0.weight"] = (out_ch, block_in, 1, 1)
                bn(f"{p}.downsample.1", out_ch)
        in_ch = out_ch
    shapes["fc.weight"] = (num_classes, 32 * width)
    shapes["fc.bias"] = (num_classes,)
    return shapes


_TORCHVISION_SHAPES = {18: torchvision_resnet18_shapes, 50: torchvision_resnet50_shapes}


def fabricated_state_dict(width: int = 8, seed: int = 0, depth: int = 18) -> dict[str, torch.Tensor]:
    """Random tensors under the keys and shapes of torchvision's ``resnet{depth}`` (18 or 50)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _TORCHVISION_SHAPES[depth](width).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(int(torch.randint(1, 1000, (), generator=gen)))
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


def resnet18_modules(width: int = 8, in_channels: int = 3) -> dict[str, nn.Module]:
    widths = resnet_widths(width)
    modules: dict[str, nn.Module] = {"stem": resnet_stem(in_channels, width)}
    in_ch = width
    for i, (blocks, out_ch) in enumerate(zip(RESNET_LAYERS[18], widths, strict=True)):
        modules[f"layer{i + 1}"] = make_layer(in_ch, out_ch, blocks, stride=1 if i == 0 else 2)
        in_ch = out_ch
    return modules


def resnet50_modules(width: int = 8, in_channels: int = 3) -> dict[str, nn.Module]:
    modules: dict[str, nn.Module] = {"stem": resnet_stem(in_channels, width)}
    for i, layer in enumerate(resnet_layers(50, width)):
        modules[f"layer{i + 1}"] = layer
    return modules


def _module_shapes(modules: dict[str, nn.Module]) -> dict[str, tuple[int, ...]]:
    """The torchvision keys the modules would have (the stem's without its module name)."""
    ours = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            ours[key if name == "stem" else f"{name}.{key}"] = tuple(value.shape)
    return ours


def test_module_keys_match_torchvision_resnet18():
    shapes = torchvision_resnet18_shapes(8)
    ours = {}
    modules = resnet18_modules(8)
    for key, value in modules["stem"].state_dict().items():
        ours[key] = tuple(value.shape)
    for name in ("layer1", "layer2", "layer3", "layer4"):
        for key, value in modules[name].state_dict().items():
            ours[f"{name}.{key}"] = tuple(value.shape)
    expected = {k: v for k, v in shapes.items() if not k.startswith("fc.")}
    assert ours == expected


def test_loader_puts_every_value_in_the_right_place():
    state = fabricated_state_dict(8)
    modules = resnet18_modules(8)
    summary = load_torchvision_resnet(state, modules)
    assert summary.ok
    assert set(summary.ignored) == {"fc.weight", "fc.bias"}
    assert len(summary.loaded) == len(state) - 2
    assert summary.adapted == ()
    stem = modules["stem"]
    torch.testing.assert_close(stem.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(stem.bn1.running_mean, state["bn1.running_mean"])
    assert int(stem.bn1.num_batches_tracked) == int(state["bn1.num_batches_tracked"])
    torch.testing.assert_close(modules["layer1"][1].conv2.weight, state["layer1.1.conv2.weight"])
    torch.testing.assert_close(modules["layer3"][1].bn2.running_var, state["layer3.1.bn2.running_var"])
    torch.testing.assert_close(modules["layer3"][0].downsample[1].weight, state["layer3.0.downsample.1.weight"])
    torch.testing.assert_close(modules["layer4"][0].downsample[0].weight, state["layer4.0.downsample.0.weight"])
    # exhaustively: every source tensor equals its destination
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            src = f"{key}" if name == "stem" else f"{name}.{key}"
            torch.testing.assert_close(value, state[src].to(value.dtype), msg=src)
    assert "stem" in str(summary) and "layer4" in str(summary)


def test_loader_partial_modules_and_custom_prefix_map():
    """SF-style: per-modality stem + layer1 + layer2 only; layer3/4 keys are ignored, not errors."""
    state = fabricated_state_dict(8)
    mods = resnet18_modules(8)
    partial = {"stem": mods["stem"], "layer1": mods["layer1"], "layer2": mods["layer2"]}
    summary = load_torchvision_resnet(state, partial)
    assert summary.ok
    assert any(k.startswith("layer3.") for k in summary.ignored)
    assert all(not k.startswith(("layer3", "layer4")) for k in summary.loaded)
    # an encoder with different attribute names, via prefix_map into one module
    encoder = nn.Module()
    encoder.first = resnet_stem(3, 8)
    encoder.stage1 = make_layer(8, 8, 2)
    prefix_map = {"conv1.": "rgb.first.conv1.", "bn1.": "rgb.first.bn1.", "layer1.": "rgb.stage1."}
    with pytest.raises(StateDictMismatchError, match=r"unexpected.*layer2\.0\.conv1\.weight"):
        load_torchvision_resnet(state, {"rgb": encoder}, prefix_map)  # layer2..4 match no prefix
    prefix_map.update({"layer2.": None, "layer3.": None, "layer4.": None})
    summary = load_torchvision_resnet(state, {"rgb": encoder}, prefix_map)
    assert summary.ok and "layer4.1.bn2.weight" in summary.ignored
    torch.testing.assert_close(encoder.stage1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_loader_depth_conv1_adaptation():
    state = fabricated_state_dict(8)
    rgb_kernel = state["conv1.weight"]
    for mode, in_channels, expected in (
        ("sum", 1, rgb_kernel.sum(1, keepdim=True)),
        ("mean", 1, rgb_kernel.mean(1, keepdim=True)),
        ("sum", 4, rgb_kernel.mean(1, keepdim=True).expand(-1, 4, -1, -1) * 0.75),
    ):
        modules = resnet18_modules(8, in_channels=in_channels)
        summary = load_torchvision_resnet(state, {"stem": modules["stem"]}, conv1_mode=mode)
        assert summary.adapted == ("stem.conv1.weight",)
        torch.testing.assert_close(modules["stem"].conv1.weight, expected)
    # "sum": a depth map equals the RGB net's response to (d, d, d)
    depth_stem, rgb_stem = resnet_stem(1, 8), resnet_stem(3, 8)
    load_torchvision_resnet(state, {"stem": depth_stem})
    load_torchvision_resnet(state, {"stem": rgb_stem})
    d = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(depth_stem.conv1(d), rgb_stem.conv1(d.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-5)


def test_loader_errors_name_the_keys_and_load_nothing():
    state = fabricated_state_dict(8)
    modules = resnet18_modules(8)
    before = modules["layer1"][0].conv1.weight.detach().clone()

    missing = dict(state)
    del missing["layer2.1.bn2.running_var"]
    with pytest.raises(StateDictMismatchError, match=r"missing.*layer2\.1\.bn2\.running_var") as err:
        load_torchvision_resnet(missing, modules)
    assert err.value.missing == ("layer2.1.bn2.running_var",)
    torch.testing.assert_close(modules["layer1"][0].conv1.weight, before)  # atomic: nothing copied

    wrong = dict(state)
    wrong["layer3.0.conv1.weight"] = torch.randn(32, 15, 3, 3)
    with pytest.raises(StateDictMismatchError, match=r"layer3\.0\.conv1\.weight.*\(32, 15, 3, 3\).*\(32, 16, 3, 3\)"):
        load_torchvision_resnet(wrong, modules)

    extra = dict(state)
    extra["layer1.2.conv1.weight"] = torch.randn(8, 8, 3, 3)  # a ResNet-34 block in a ResNet-18 layer
    extra["avgpool.foo"] = torch.zeros(1)
    with pytest.raises(StateDictMismatchError, match=r"unexpected.*avgpool\.foo") as err:
        load_torchvision_resnet(extra, modules)
    assert any("layer1.2.conv1.weight" in k for k in err.value.unexpected)

    # non-strict: loads what fits and reports the rest
    summary = load_torchvision_resnet(wrong, modules, strict=False)
    assert not summary.ok and len(summary.mismatched) == 1
    torch.testing.assert_close(modules["layer1"][0].conv1.weight, state["layer1.0.conv1.weight"])

    # older checkpoints without num_batches_tracked are fine
    no_nbt = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert load_torchvision_resnet(no_nbt, resnet18_modules(8)).ok

    with pytest.raises(ValueError, match="typo"):
        load_torchvision_resnet(state, {"typo": modules["stem"]})


@pytest.mark.parametrize("width", [4, 64])
def test_module_keys_match_torchvision_resnet50(width):
    expected = {k: v for k, v in torchvision_resnet50_shapes(width).items() if not k.startswith("fc.")}
    assert _module_shapes(resnet50_modules(width)) == expected


def test_loader_resnet50_puts_every_value_in_the_right_place():
    state = fabricated_state_dict(8, seed=5, depth=50)
    modules = resnet50_modules(8)
    summary = load_torchvision_resnet(state, modules, strict=True)
    assert summary.ok and set(summary.ignored) == {"fc.weight", "fc.bias"}
    assert len(summary.loaded) == len(state) - 2 and summary.adapted == ()
    l1, l2, l3, l4 = (modules[f"layer{i}"] for i in (1, 2, 3, 4))
    torch.testing.assert_close(l1[0].conv3.weight, state["layer1.0.conv3.weight"])
    torch.testing.assert_close(l1[0].downsample[0].weight, state["layer1.0.downsample.0.weight"])
    torch.testing.assert_close(l3[5].bn3.running_var, state["layer3.5.bn3.running_var"])
    torch.testing.assert_close(l4[2].conv2.weight, state["layer4.2.conv2.weight"])
    torch.testing.assert_close(l2[0].downsample[1].running_mean, state["layer2.0.downsample.1.running_mean"])
    assert int(l4[2].bn3.num_batches_tracked) == int(state["layer4.2.bn3.num_batches_tracked"])
    for name, module in modules.items():  # exhaustively: every source tensor equals its destination
        for key, value in module.state_dict().items():
            src = key if name == "stem" else f"{name}.{key}"
            torch.testing.assert_close(value, state[src].to(value.dtype), msg=src)
    # a ResNet-18 file cannot fill ResNet-50 layers: the conv3/bn3 keys are missing, nothing is copied
    before = l1[0].conv1.weight.detach().clone()
    with pytest.raises(StateDictMismatchError, match=r"missing.*layer1\.0\.conv3\.weight") as err:
        load_torchvision_resnet(fabricated_state_dict(8, depth=18), modules)
    assert "layer3.5.bn3.running_var" in err.value.missing and err.value.mismatched
    torch.testing.assert_close(l1[0].conv1.weight, before)


def test_torchvision_resnet_depth_reads_the_key_set():
    assert torchvision_resnet_depth(fabricated_state_dict(8, depth=18)) == 18
    assert torchvision_resnet_depth(fabricated_state_dict(4, depth=50)) == 50
    r34: dict[str, nn.Module] = {"stem": resnet_stem(3, 4)}
    r34 |= {f"layer{i + 1}": layer for i, layer in enumerate(resnet_layers(34, 4))}
    assert torchvision_resnet_depth({k: torch.zeros(1) for k in _module_shapes(r34)}) == 34
    partial = {k: v for k, v in fabricated_state_dict(4, depth=50).items() if not k.startswith("layer4.")}
    assert torchvision_resnet_depth(partial) is None
    assert torchvision_resnet_depth({"weight": torch.zeros(1)}) is None


def test_load_state_dict_file(tmp_path):
    state = fabricated_state_dict(8)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(state)
    torch.testing.assert_close(loaded["layer2.0.downsample.0.weight"], state["layer2.0.downsample.0.weight"])

    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt"):
        load_state_dict_file(corrupt)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_state_dict_file(tmp_path / "absent.pth")
    st = tmp_path / "w.safetensors"
    st.write_bytes(b"\x00" * 16)
    try:
        import safetensors  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="safetensors"):
            load_state_dict_file(st)
    else:
        with pytest.raises(ValueError, match="w.safetensors"):
            load_state_dict_file(st)


# --------------------------------------------------------------------------------------------
# ResNet blocks
# --------------------------------------------------------------------------------------------


def test_stem_and_layers_shapes():
    modules = resnet18_modules(8)
    x = torch.randn(2, 3, 50, 66)
    y = modules["stem"](x)
    assert y.shape == (2, 8, 13, 17)  # ceil(ceil(n / 2) / 2)
    for name, c, hw in (
        ("layer1", 8, (13, 17)),
        ("layer2", 16, (7, 9)),
        ("layer3", 32, (4, 5)),
        ("layer4", 64, (2, 3)),
    ):
        y = modules[name](y)
        assert y.shape == (2, c, *hw)
    assert resnet_stem(3, 8, kernel_size=3).conv1.weight.shape == (8, 3, 3, 3)
    assert len(make_layer(8, 16, RESNET_LAYERS[34][2], stride=2)) == 6
    block = BasicBlock(8, 8)
    assert block.downsample is None


def test_make_layer_keeps_basic_blocks_by_default():
    """Existing callers (SF stems, resnet_trunk, ResNet-18/34) get exactly the layers and keys they had."""
    layer = make_layer(8, 16, 2, 2)
    assert all(type(b) is BasicBlock for b in layer)
    assert sorted({k.split(".", 1)[1] for k in layer.state_dict()}) == sorted(
        [f"{c}.weight" for c in ("conv1", "conv2", "downsample.0")]
        + [f"{bn}.{n}" for bn in ("bn1", "bn2", "downsample.1") for n in _BN]
    )
    assert resnet_widths(8) == (8, 16, 32, 64) and resnet_widths(8, 4) == (32, 64, 128, 256)
    assert RESNET_LAYERS[18] == (2, 2, 2, 2) and RESNET_LAYERS[34] == RESNET_LAYERS[50] == (3, 4, 6, 3)
    assert [RESNET_BLOCKS[d] for d in (18, 34, 50)] == [BasicBlock, BasicBlock, Bottleneck]
    bottlenecks = make_layer(8, 32, 3, 2, block=Bottleneck)
    assert [type(b) for b in bottlenecks] == [Bottleneck] * 3 and bottlenecks[0].downsample is not None
    assert [len(layer) for layer in resnet_layers(50, 4)] == [3, 4, 6, 3]
    with pytest.raises(ValueError, match=r"\[18, 34, 50\]"):
        resnet_layers(101)


def test_bottleneck_block_is_torchvision_v1_5():
    torch.manual_seed(0)
    block = Bottleneck(16, 32, stride=2)
    assert (block.planes, block.expansion, Bottleneck.expansion, BasicBlock.expansion) == (8, 4, 4, 1)
    assert block.conv1.weight.shape == (8, 16, 1, 1) and block.conv1.stride == (1, 1)
    assert block.conv2.weight.shape == (8, 8, 3, 3) and block.conv2.stride == (2, 2)  # v1.5: the 3×3 strides
    assert block.conv3.weight.shape == (32, 8, 1, 1) and block.bn3.num_features == 32
    assert block.downsample[0].weight.shape == (32, 16, 1, 1) and block.downsample[0].stride == (2, 2)
    assert Bottleneck(32, 32).downsample is None
    assert Bottleneck(8, 32).downsample is not None  # layer1 block 0: 64 → 256 at stride 1
    with pytest.raises(ValueError, match="multiple of 4"):
        Bottleneck(8, 30)
    x = torch.randn(2, 16, 9, 11)
    block.eval()
    for bn in (block.bn1, block.bn2, block.bn3, block.downsample[1]):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    y = block(x)
    assert y.shape == (2, 32, 5, 6)
    branch = F.relu(block.bn1(F.conv2d(x, block.conv1.weight)))
    branch = F.relu(block.bn2(F.conv2d(branch, block.conv2.weight, stride=2, padding=1)))
    branch = block.bn3(F.conv2d(branch, block.conv3.weight))
    torch.testing.assert_close(y, F.relu(branch + block.downsample(x)))
    # zero_init_residual zeroes bn3 (bn2 of a BasicBlock): each block starts as relu(shortcut)
    init_resnet_weights(block, zero_init_residual=True)
    assert not block.bn3.weight.any() and block.bn2.weight.all()
    block.eval()
    torch.testing.assert_close(block(x), F.relu(block.downsample(x)))
    basic = BasicBlock(8, 8)
    init_resnet_weights(basic, zero_init_residual=True)
    assert not basic.bn2.weight.any()


def test_squeeze_excitation():
    se = SqueezeExcitation(32, reduction=16)
    assert se.hidden == 2 and SqueezeExcitation(8).hidden == 1
    x = torch.randn(3, 32, 5, 7, requires_grad=True)
    y = se(x)
    assert y.shape == x.shape
    gate = se.gate(x)
    assert gate.shape == (3, 32, 1, 1) and bool(((gate > 0) & (gate < 1)).all())
    torch.testing.assert_close(y, x * gate)
    y.sum().backward()
    assert all(p.grad is not None for p in se.parameters())
    v = torch.randn(4, 32)  # vectors: (B, C)
    assert se(v).shape == (4, 32)


# --------------------------------------------------------------------------------------------
# ESANet pieces
# --------------------------------------------------------------------------------------------


def test_deterministic_resampling_matches_torch_ops():
    x = torch.randn(2, 3, 7, 10)
    for size in ((1, 1), (5, 5), (3, 4), (7, 10), (2, 9)):
        torch.testing.assert_close(adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(x, size))
    for size in ((14, 20), (13, 19), (7, 10), (3, 4), (1, 1), (50, 66)):
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(resize_bilinear(x, size), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw", [(48, 64), (50, 66), (7, 9), (1, 1)])
def test_non_bottleneck_keeps_shape(hw):
    for dilation in (1, 2, 8):
        block = NonBottleneck1D(8, dilation=dilation, dropout=0.1)
        x = torch.randn(2, 8, *hw)
        assert block(x).shape == x.shape


def test_learned_upsample_starts_bilinear():
    up = LearnedUpsample(4)
    x = torch.randn(2, 4, 5, 8)
    y = up(x)
    assert y.shape == (2, 4, 10, 16)
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


@pytest.mark.parametrize("hw", [(2, 2), (1, 1), (1, 3), (3, 5), (12, 16)])
def test_pyramid_pooling_small_maps(hw):
    ppm = PyramidPoolingContext(16, 12, bins=(1, 5))
    x = torch.randn(2, 16, *hw, requires_grad=True)
    y = ppm(x)
    assert y.shape == (2, 12, *hw)
    y.square().mean().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in ppm.parameters())


@pytest.mark.parametrize("image_hw", [(48, 64), (50, 66)])
def test_decoder_shapes_and_gradients(image_hw):
    """Encoder (width 8) + context + 3 decoder modules with skips, as in ESANet, for even and odd sizes."""
    torch.manual_seed(0)
    mods = resnet18_modules(8)
    widths = resnet_widths(8)
    context = PyramidPoolingContext(widths[3], 32)
    skips = nn.ModuleList([SkipAdapter(widths[2], 32), SkipAdapter(widths[1], 24), SkipAdapter(widths[0], 16)])
    decoders = nn.ModuleList([DecoderModule(32, 32, 1), DecoderModule(32, 24, 2), DecoderModule(24, 16, 1)])
    head = nn.Conv2d(16, 5, 3, padding=1)
    final_up = nn.Sequential(LearnedUpsample(5), LearnedUpsample(5))
    everything = nn.ModuleList([*mods.values(), context, skips, decoders, head, final_up])

    x = torch.randn(2, 3, *image_hw)
    f4 = mods["layer1"](mods["stem"](x))  # 1/4
    f8 = mods["layer2"](f4)
    f16 = mods["layer3"](f8)
    f32 = mods["layer4"](f16)
    out = context(f32)
    sides = []
    for decoder, skip, enc in zip(decoders, skips, (f16, f8, f4), strict=True):
        out, side = decoder.forward_features(out, skip(enc))
        assert out.shape[-2:] == enc.shape[-2:]
        sides.append(side)
    logits = final_up(head(out))
    assert logits.shape == (2, 5, 4 * f4.shape[-2], 4 * f4.shape[-1])
    h4, w4 = (math.ceil(math.ceil(n / 2) / 2) for n in image_hw)
    assert f4.shape[-2:] == (h4, w4)
    assert [s.shape[-2:] for s in sides] == [f32.shape[-2:], f16.shape[-2:], f8.shape[-2:]]
    (logits.square().mean() + sum(s.mean() for s in sides)).backward()
    missing = [n for n, p in everything.named_parameters() if p.grad is None]
    assert not missing


def test_decoder_module_without_skip_and_bad_skip():
    dec = DecoderModule(8, 4, num_blocks=0)
    assert dec(torch.randn(1, 8, 3, 5)).shape == (1, 4, 6, 10)
    with pytest.raises(ValueError, match="channels"):
        dec(torch.randn(1, 8, 3, 5), torch.randn(1, 8, 6, 10))


# --------------------------------------------------------------------------------------------
# Parameter counts (construction only, no forward)
# --------------------------------------------------------------------------------------------


def _count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _sf_modules(m: int = 3, k: int = 2, width: int = 64, stem_kernel: int = 7) -> list[nn.Module]:
    widths = resnet_widths(width)
    per_modality = [
        nn.ModuleList(
            [
                resnet_stem(3, width, kernel_size=stem_kernel),
                make_layer(widths[0], widths[0], 2, 1),
                make_layer(widths[0], widths[1], 2, 2),
                SqueezeExcitation(widths[1], reduction=16),
            ]
        )
        for _ in range(m)
    ]
    shared = [
        make_layer(m * widths[1], widths[2], 2, 2),
        make_layer(widths[2], widths[3], 2, 2),
        nn.Linear(widths[3], k),
    ]
    return [*per_modality, *shared]


def test_sf_parameter_count_matches_baselines():
    """BASELINES.md "SF": about 13.2 M parameters at M = 3.

    Per modality: 7×7 stem + layer1 + layer2 (width 64) + SE(128, r = 16, 1×1 convs with bias:
    2,184); shared: layer3 (3·128 → 256, stride 2), layer4 (→ 512), linear classifier (K = 2).
    Measured: 13,205,594 (13,182,554 with the 3×3 stem BASELINES.md mentions). The ResNet-18
    encoder (stem + 4 layers, no fc) at width 64 is 11,176,512 (torchvision's resnet18 total
    11,689,512 minus its fc 513,000).
    """
    total = _count(*_sf_modules())
    assert total == 13_205_594
    assert 13.0e6 <= total <= 13.4e6
    assert _count(*_sf_modules(stem_kernel=3)) == 13_182_554
    assert _count(SqueezeExcitation(128)) == 2_184
    assert _count(*resnet18_modules(64).values()) == 11_176_512


def test_resnet50_trunk_parameter_count_matches_torchvision():
    """conv1..layer4 of a width-64 ResNet-50, no fc: 23,508,032 = torchvision's resnet50 total
    25,557,032 minus its fc (2048·1000 + 1000 = 2,049,000); the hand-written key table agrees."""
    assert _count(*resnet50_modules(64).values()) == 23_508_032
    table = torchvision_resnet50_shapes(64)
    learnable = [shape for key, shape in table.items() if key.endswith(("weight", "bias"))]
    assert sum(math.prod(shape) for shape in learnable) == 23_508_032 + 2_049_000
