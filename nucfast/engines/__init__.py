"""Inference engines: ONNX export, torch/onnxruntime/TensorRT backends, TensorRT(-RTX) engine builder.

- ``export_onnx(model)`` / ``validate_onnx(model, onnx, inputs)``: ONNX (opset 17, dynamic N/H/W), checked
  against torch with onnxruntime; ``export_tile_onnx`` for the PathologyGAN encoder / generator.
- ``Backend.run(batch) -> probabilities`` implemented by ``TorchBackend``, ``OnnxRuntimeBackend``,
  ``TensorRTBackend``; ``select_backend("auto", model, ...)`` picks one (``.name`` says which).
- ``build_engine(onnx, precision=..., profiles=..., calibration_tiles=..., cache_dir=...)``: TensorRT or
  TensorRT-RTX engine, cached by model hash, API version, GPU architecture and precision.
- CLI: ``python -m nucfast.engines build ...``; ``add_engine_subparsers`` / ``main`` for
  ``nucfast build-engine``.
"""

from ._backends import (
    CPU_PREFERENCE,
    Backend,
    ExportCheck,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    select_backend,
    validate_onnx,
)
from ._cli import add_engine_subparsers, build_engine_main, main
from ._errors import BackendUnavailableError
from ._onnx import DEFAULT_OPSET, MODELS, cached_onnx, export_onnx, load_model, onnx_sha256
from ._tensorrt import (
    APIS,
    PRECISIONS,
    EngineInfo,
    Profile,
    TensorRTNotAvailableError,
    build_engine,
    default_cache_dir,
    default_profiles,
    engine_key,
    find_cached_engine,
    gpu_arch,
    import_tensorrt,
    load_calibration_tiles,
    read_engine_metadata,
)
from ._tile_onnx import export_tile_onnx

__all__ = [
    "BackendUnavailableError",
    "add_engine_subparsers",
    "build_engine_main",
    "main",
    "APIS",
    "CPU_PREFERENCE",
    "DEFAULT_OPSET",
    "MODELS",
    "cached_onnx",
    "export_tile_onnx",
    "PRECISIONS",
    "Backend",
    "EngineInfo",
    "ExportCheck",
    "OnnxRuntimeBackend",
    "Profile",
    "TensorRTBackend",
    "TensorRTNotAvailableError",
    "TorchBackend",
    "build_engine",
    "default_cache_dir",
    "default_profiles",
    "engine_key",
    "export_onnx",
    "find_cached_engine",
    "gpu_arch",
    "import_tensorrt",
    "load_calibration_tiles",
    "load_model",
    "onnx_sha256",
    "read_engine_metadata",
    "select_backend",
    "validate_onnx",
]
