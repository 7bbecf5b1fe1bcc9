"""Deprecated location: the safetensors weights and checkpoint I/O moved to :mod:`nucfast.models` (the
model layer owns weights). Kept so that existing imports (``nucfast.train.checkpoint``) keep working."""

from ..models._weights import (  # noqa: F401
    export_weights,
    file_sha256,
    load_checkpoint,
    load_weights,
    read_metadata,
    save_checkpoint,
    save_weights,
)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "save_weights",
    "load_weights",
    "read_metadata",
    "export_weights",
    "file_sha256",
]
