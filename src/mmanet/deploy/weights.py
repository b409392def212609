"""Deployment weights as ``.safetensors``: the network's tensors plus, as JSON metadata, what rebuilds it.

A ``.safetensors`` file holds raw tensors and a string→string header, nothing executable
(unlike a pickle), so loading one never runs code. The header's ``mmanet`` entry holds the
run configuration and the data description (:class:`~mmanet.task.TaskInfo`, with the input
normalisation), which is all :func:`net_from_safetensors` needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmanet.config import RunConfig, resolve_run_config
from mmanet.deploy.checkpoint import CheckpointError, check_finite_weights, check_task_info, new_file_mode
from mmanet.models.factory import build_net
from mmanet.models.network import MultimodalNet
from mmanet.task import TaskInfo
from mmanet.versioning import check_schema, stamp

METADATA_KEY = "mmanet"


def save_weights(
    net: MultimodalNet, config: RunConfig, info: TaskInfo, path: str | Path, extra: dict | None = None
) -> Path:
    """Write ``net``'s state dict and its description to ``path`` (atomically: tmp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    header = {"config": config.model_dump(mode="json"), "info": info.to_dict(), **(extra or {}), **stamp()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(header)})
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The ``mmanet`` metadata of a ``.safetensors`` file written by :func:`save_weights`."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        header = json.loads(metadata[METADATA_KEY])
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except Exception as err:  # safetensors raises its own SafetensorError, json a ValueError, …
        raise CheckpointError(f"{path} is not an mmanet .safetensors file ({err})") from None
    if not isinstance(header, dict) or "config" not in header or "info" not in header:
        raise CheckpointError(f"{path} is not an mmanet .safetensors file (no model description)")
    check_schema(header, f"the weights file {path}")
    return header


def net_from_safetensors(path: str | Path) -> tuple[MultimodalNet, RunConfig, TaskInfo, dict[str, Any]]:
    """Rebuild the network of a ``.safetensors`` file: (net in eval mode, config, info, header)."""
    from safetensors.torch import load_file

    path = Path(path)
    header = read_header(path)
    config = resolve_run_config(header["config"], source=f"weights {path}")
    try:
        info = TaskInfo.from_dict(header["info"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: its data description is damaged ({err})") from None
    check_task_info(info, f"weights file {path}")
    net = build_net(config.model, info)
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError for a damaged file
        raise CheckpointError(f"{path} is not a readable .safetensors file ({err})") from None
    check_finite_weights(state, f"weights file {path}")
    try:
        net.load_state_dict(state)
    except Exception as err:  # size mismatches, missing keys, bad dtypes
        raise CheckpointError(f"{path}: the stored weights do not fit the stored model configuration: {err}") from None
    return net.eval(), config, info, header
