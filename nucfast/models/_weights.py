"""Weights and resumable training checkpoints in safetensors (no pickle anywhere): the model layer's I/O.

Shipped weights (:func:`save_weights`) hold the model tensors (float16 by default) and JSON metadata under
the ``nucfast`` key: ``kind`` (the network family, see :mod:`nucfast.models`), ``config`` (its constructor
arguments) and whatever inference needs (stain normaliser, post-processing, validation split).

One file holds the model state (``model.*``), the optimiser tensors (``optim.<param index>.<key>``), the torch
RNG state (``rng.torch``) and, in the safetensors metadata, JSON for everything else (step, optimiser
param_groups, numpy Generator state, config, history). Files are written atomically: to a temporary file in
the same directory, fsync'ed, then ``os.replace``'d over the destination.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "save_weights",
    "load_weights",
    "read_metadata",
    "tensor_shapes",
    "export_weights",
    "file_sha256",
]


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shipped weights unreadable to others
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(
    path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int,
    np_rng_state: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write model + optimiser + step + RNG states (+ JSON-able ``extra``) atomically to ``path``."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"step": int(step), "extra": extra or {}}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for idx, st in sd["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optim.{idx}.{k}"] = v
                else:
                    meta.setdefault("optim_scalars", {}).setdefault(str(idx), {})[k] = v
        meta["optim_param_groups"] = sd["param_groups"]
    tensors["rng.torch"] = torch.get_rng_state()
    if np_rng_state is not None:
        meta["np_rng"] = np_rng_state
    _atomic_save(tensors, {"nucfast": json.dumps(meta)}, Path(path))


def read_metadata(path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
    return json.loads(md.get("nucfast", "{}"))


def tensor_shapes(path) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors in a safetensors file, read from its header (no tensor is loaded), with the
    ``model.`` prefix of checkpoints stripped (as :func:`load_weights`)."""
    with safe_open(str(path), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if any(k.startswith("model.") for k in shapes):
        shapes = {k[6:]: v for k, v in shapes.items() if k.startswith("model.")}
    return shapes


def load_checkpoint(path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns the metadata (``step``, ``np_rng``, ``extra``)."""
    tensors = load_file(str(path))
    meta = read_metadata(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None and "optim_param_groups" in meta:
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        for idx, d in meta.get("optim_scalars", {}).items():
            state.setdefault(int(idx), {}).update(d)
        optimizer.load_state_dict({"state": state, "param_groups": meta["optim_param_groups"]})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return meta


def save_weights(path, model, *, metadata: dict[str, Any], half: bool = True) -> None:
    """Ship-able weights: model tensors only (float16 by default), JSON ``metadata`` (architecture, ...).

    ``model`` is a module or a state dict.
    """
    sd = {}
    items = model.items() if isinstance(model, dict) else model.state_dict().items()
    for k, v in items:
        # thresholds (the attention head's running tau) stay in full precision
        sd[k] = v.half() if (half and v.is_floating_point() and not k.endswith("running_tau")) else v
    _atomic_save(sd, {"nucfast": json.dumps(metadata)}, Path(path))


def load_weights(path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read weights of :func:`save_weights` or a checkpoint (``model.`` prefix stripped); never unpickles."""
    tensors = load_file(str(path))
    meta = read_metadata(path)
    if any(k.startswith("model.") for k in tensors):
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    return tensors, meta


def export_weights(src, dst, *, metadata: dict[str, Any] | None = None, half: bool = True) -> dict[str, Any]:
    """Copy the model tensors of a training file (``best.safetensors`` or a checkpoint) to ``dst`` as shipped
    weights (float16), merging ``metadata`` into the stored metadata; returns the metadata written."""
    sd, meta = load_weights(src)
    meta = {"kind": "usenet", **meta, **(metadata or {})}
    save_weights(dst, sd, metadata=meta, half=half)
    return meta


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes (weights provenance in manifests and output metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
