"""Deprecated location: the safetensors weights and checkpoint I/O moved to :mod:`nucfast.models` (the
model layer owns weights). Kept so that existing imports (``nucfast.train.checkpoint``) keep working."""

from ..models._weights import *  # noqa: F403
from ..models._weights import __all__  # noqa: F401
