"""Errors of the inference layer that a user can act on (the CLI prints them as one line)."""

from __future__ import annotations

__all__ = ["BackendUnavailableError"]


class BackendUnavailableError(RuntimeError):
    """The requested device or engine is not available here (no CUDA GPU, no TensorRT, ...)."""
