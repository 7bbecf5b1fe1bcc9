"""Inference backends with one interface, and the ``backend="auto"`` rule.

Every backend maps a float batch ``(N, 3, H, W)`` in [0, 1] to float32 probabilities ``(N, C, H, W)``
(``run``); ``name`` says which one it is (``"tensorrt"``, ``"torch-cuda"``, ``"onnxruntime-cpu"``,
``"torch-cpu"``) for results and progress bars.

The ``auto`` rule: a TensorRT engine on the GPU if one is built (given, or found in the engine cache for
this model), else torch on CUDA, else onnxruntime on the CPU when it is the faster CPU backend, else
torch on the CPU. Which CPU backend is faster was measured (``benchmarks/bench_backends.py``, USE-Net lite,
batch 4 of 256x256, 2 threads, this 2-core machine): see :data:`CPU_PREFERENCE` and its comment.
``select_backend(..., autotune=True)`` measures both on the caller's machine instead.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._errors import BackendUnavailableError
from ._onnx import InferenceWrapper, export_onnx
from ._tensorrt import find_cached_engine, import_tensorrt, read_engine_metadata

__all__ = [
    "CPU_PREFERENCE",
    "Backend",
    "ExportCheck",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "select_backend",
    "validate_onnx",
]

#: The CPU backend ``auto`` picks. Measured with benchmarks/bench_backends.py on this machine (2 shared
#: cores, torch 2.14.1, onnxruntime 1.31.1), USE-Net lite, batch 4 x 256 x 256, float32, 2 threads both:
#: onnxruntime 1.65x faster at 1 thread (0.70 s vs 1.15 s per batch), 3.4x at 2 threads (1.28 s vs 4.40 s,
#: both contended by other users); details in the docstring of benchmarks/bench_backends.py.
CPU_PREFERENCE = "onnxruntime"


def _check_batch(batch: torch.Tensor) -> torch.Tensor:
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch must be a torch.Tensor, got {type(batch).__name__}")
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"batch must have shape (N, 3, H, W), got {tuple(batch.shape)}")
    if not batch.is_floating_point():
        raise TypeError(f"batch must be a floating-point tensor with values in [0, 1], got {batch.dtype}")
    if batch.numel() == 0:
        raise ValueError(f"batch must not be empty, got shape {tuple(batch.shape)}")
    return batch


class Backend:
    """Interface: ``run(batch, **inputs) -> probabilities``; ``name``; ``device`` where the outputs live.

    ``inputs``: the graph's other inputs by name, the same for the whole batch (USE-Net exported with
    ``se_gates=True``: ``se_gates=`` the frozen squeeze-excitation gates, float (n_se_gates,)).
    """

    name: str = "backend"
    device: torch.device = torch.device("cpu")

    def run(self, batch: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.run(batch, **inputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={str(self.device)!r})"


class TorchBackend(Backend):
    """Eager torch on CPU or CUDA.

    Parameters
    ----------
    model : nn.Module
        Network returning logits (the output sigmoid is applied here).
    device : str or torch.device
    half : bool, optional
        Reduced-precision autocast: float16 on CUDA (default on), bfloat16 on the CPU (default off; the
        name then ends in ``-bf16``). CPU inputs run channels_last (faster convolutions, same values).
    output : {"probabilities", "logits"}
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", *, half: bool | None = None,
                 output: str = "probabilities"):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("device: CUDA requested but no CUDA device is available")
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
        self.half = self.device.type == "cuda" if half is None else bool(half)
        self.name = f"torch-{self.device.type}" + ("-bf16" if self.half and self.device.type == "cpu" else "")
        self.module = InferenceWrapper(model.eval(), output=output).to(self.device).eval()

    def run(self, batch: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        x = _check_batch(batch).to(self.device, torch.float32)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        extra = {k: torch.as_tensor(v).to(self.device, torch.float32) for k, v in inputs.items()}
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.half,
                                                    dtype=torch.float16 if self.device.type == "cuda"
                                                    else torch.bfloat16):
            return self.module(x, **extra).float()


class OnnxRuntimeBackend(Backend):
    """onnxruntime on the CPU (``CPUExecutionProvider``), full graph optimisation.

    Parameters
    ----------
    onnx : bytes or path
        An ONNX model from :func:`export_onnx`.
    intra_op_threads : int, optional
        Threads for one operator (default: ``torch.get_num_threads()``); inter-op parallelism is 1.
    """

    name = "onnxruntime-cpu"

    def __init__(self, onnx: bytes | str | os.PathLike, *, intra_op_threads: int | None = None):
        import onnxruntime as ort

        threads = torch.get_num_threads() if intra_op_threads is None else intra_op_threads
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"intra_op_threads must be a positive int, got {intra_op_threads!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = onnx if isinstance(onnx, bytes | bytearray) else str(Path(onnx))
        self.session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        self.intra_op_threads = threads
        self.input_name = self.session.get_inputs()[0].name
        self.extra_inputs = tuple(i.name for i in self.session.get_inputs()[1:])
        self.output_name = self.session.get_outputs()[0].name
        self.device = torch.device("cpu")

    def run(self, batch: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        x = _check_batch(batch).detach().to("cpu", torch.float32).contiguous()
        feeds = {self.input_name: x.numpy()}
        if set(inputs) != set(self.extra_inputs):
            raise ValueError(f"this graph takes the inputs {list(self.extra_inputs)} besides the image, "
                             f"got {sorted(inputs)}")
        for k, v in inputs.items():
            feeds[k] = torch.as_tensor(v).detach().to("cpu", torch.float32).contiguous().numpy()
        (y,) = self.session.run([self.output_name], feeds)
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))


_TRT_TO_TORCH = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT8": torch.int8,
                 "BOOL": torch.bool, "INT64": torch.int64, "BF16": torch.bfloat16, "UINT8": torch.uint8}


class TensorRTBackend(Backend):
    """A serialized TensorRT (or TensorRT-RTX) engine on the current CUDA device. Cannot run without a GPU.

    Torch CUDA tensors are bound by address (``set_tensor_address(name, tensor.data_ptr())``) and the engine
    is enqueued on torch's current CUDA stream (``execute_async_v3``): no host copies, no extra sync.

    Parameters
    ----------
    engine : path or bytes
        A serialized engine (from :func:`nucfast.engines.build_engine`).
    api : {"auto", "tensorrt", "tensorrt_rtx"}
        The runtime that built it (``auto``: read from the engine's ``.json`` sidecar when there is one,
        else try TensorRT then TensorRT-RTX).
    """

    name = "tensorrt"

    def __init__(self, engine: str | os.PathLike | bytes, *, api: str = "auto"):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "TensorRTBackend needs a CUDA GPU; none is available (use backend='auto' to fall back to "
                "torch or onnxruntime)"
            )
        if isinstance(engine, bytes | bytearray):
            blob = bytes(engine)
        else:
            path = Path(engine)
            if not path.is_file():
                raise FileNotFoundError(f"engine: no such file {path}")
            blob = path.read_bytes()
            if api == "auto":
                api = read_engine_metadata(path).get("api", "auto")
        self.trt, self.api = import_tensorrt(api)
        trt = self.trt
        self.device = torch.device("cuda", torch.cuda.current_device())
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise RuntimeError(f"engine: {self.api} could not deserialize it (built by another version or "
                               "for another GPU architecture?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if not ins or len(outs) != 1:
            raise ValueError(f"engine must have an image input and one output, got inputs {ins}, "
                             f"outputs {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.extra_inputs = tuple(ins[1:])
        self.input_dtype = _TRT_TO_TORCH[self.engine.get_tensor_dtype(self.input_name).name]
        self.output_dtype = _TRT_TO_TORCH[self.engine.get_tensor_dtype(self.output_name).name]
        self._profile = 0

    def _select_profile(self, shape: tuple[int, ...], stream: int) -> None:
        for p in range(self.engine.num_optimization_profiles):
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, p)
            if all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                if p != self._profile:
                    self.context.set_optimization_profile_async(p, stream)
                    self._profile = p
                return
        raise ValueError(f"batch shape {shape} is outside every optimisation profile of the engine")

    def run(self, batch: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        x = _check_batch(batch).to(self.device, self.input_dtype).contiguous()
        if set(inputs) != set(self.extra_inputs):
            raise ValueError(f"this engine takes the inputs {list(self.extra_inputs)} besides the image, "
                             f"got {sorted(inputs)}")
        stream = torch.cuda.current_stream(self.device)
        self._select_profile(tuple(x.shape), stream.cuda_stream)
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise ValueError(f"engine rejected input shape {tuple(x.shape)}")
        keep = []  # the extra inputs stay alive until the launch is queued (same stream)
        for k, v in inputs.items():
            t = torch.as_tensor(v).to(self.device, _TRT_TO_TORCH[self.engine.get_tensor_dtype(k).name])
            t = t.contiguous()
            keep.append(t)
            if not self.context.set_input_shape(k, tuple(t.shape)):
                raise ValueError(f"engine rejected input {k} of shape {tuple(t.shape)}")
            self.context.set_tensor_address(k, t.data_ptr())
        y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                        device=self.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return y.float()


def _time(backend: Backend, batch: torch.Tensor, repeats: int = 2) -> float:
    backend.run(batch)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        backend.run(batch)
    return (time.perf_counter() - t) / repeats


def select_backend(
    backend: str,
    model: nn.Module,
    *,
    device: str | torch.device | None = None,
    onnx: bytes | str | os.PathLike | None = None,
    engine: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    precision: str = "fp16",
    intra_op_threads: int | None = None,
    autotune: bool = False,
    sample_shape: tuple[int, int, int, int] = (4, 3, 256, 256),
    cpu_bf16: bool = False,
) -> Backend:
    """Pick an inference backend; ``.name`` of the result says which was chosen.

    Parameters
    ----------
    backend : {"auto", "tensorrt", "torch", "onnxruntime"}
    model : nn.Module
        The network (returns logits).
    device : str or torch.device, optional
        For ``"torch"``: where to run (default CUDA when available, else CPU). ``"auto"`` on a machine with a
        GPU uses CUDA; pass ``device="cpu"`` to force a CPU backend.
    onnx : bytes or path, optional
        A prior export of ``model`` (otherwise exported on demand for onnxruntime and the cache lookup).
    engine : path, optional
        A serialized engine (``"tensorrt"``; ``"auto"`` uses it when a GPU is present).
    cache_dir : path, optional
        Engine cache searched by ``"auto"`` (on a GPU) and ``"tensorrt"`` for this model (default
        :func:`nucfast.engines.default_cache_dir`).
    precision : str
        Precision of the cached engine to look for.
    autotune : bool
        ``"auto"`` on CPU: time onnxruntime and torch on ``sample_shape`` and keep the faster instead of
        :data:`CPU_PREFERENCE`.
    cpu_bf16 : bool
        ``"auto"`` on CPU: torch with bfloat16 autocast (``Model.bf16``: the model allows it and the CPU has
        bf16 matrix hardware, :func:`nucfast.models.cpu_bf16`), before any ONNX export or timing.
    """
    choices = ("auto", "tensorrt", "torch", "onnxruntime")
    if backend not in choices:
        raise ValueError(f"backend must be one of {choices}, got {backend!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dev = torch.device(device) if device is not None else None
    gpu = torch.cuda.is_available() and (dev is None or dev.type == "cuda")

    if backend == "torch":
        return TorchBackend(model, dev or ("cuda" if torch.cuda.is_available() else "cpu"))
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(onnx if onnx is not None else export_onnx(model),
                                  intra_op_threads=intra_op_threads)
    if backend == "tensorrt" or (backend == "auto" and gpu):
        path = engine
        if path is None:  # look in the engine cache (default location when cache_dir is None)
            path = find_cached_engine(onnx if onnx is not None else export_onnx(model), precision=precision,
                                      cache_dir=cache_dir)
        if backend == "tensorrt":
            if path is None:
                raise FileNotFoundError("backend='tensorrt': no engine given and none cached for this model "
                                        "(build one with `nucfast build-engine`)")
            return TensorRTBackend(path)
        if path is not None:
            return TensorRTBackend(path)
        return TorchBackend(model, dev or "cuda")
    # auto, CPU
    if cpu_bf16:
        return TorchBackend(model, "cpu", half=True)
    try:
        ort_backend: Backend | None = OnnxRuntimeBackend(onnx if onnx is not None else export_onnx(model),
                                                         intra_op_threads=intra_op_threads)
    except ImportError:
        ort_backend = None
    torch_backend = TorchBackend(model, "cpu")
    if ort_backend is None:
        return torch_backend
    if autotune:
        x = torch.rand(sample_shape, generator=torch.Generator().manual_seed(0))
        return ort_backend if _time(ort_backend, x) <= _time(torch_backend, x) else torch_backend
    return ort_backend if CPU_PREFERENCE == "onnxruntime" else torch_backend


@dataclass
class ExportCheck:
    """Result of :func:`validate_onnx`: per input, the max |onnxruntime - torch| of the outputs."""

    shapes: list[tuple[int, ...]] = field(default_factory=list)
    max_abs_diff: list[float] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff) if self.max_abs_diff else 0.0

    def __str__(self) -> str:
        rows = ", ".join(f"{s}: {d:.3g}" for s, d in zip(self.shapes, self.max_abs_diff, strict=True))
        return f"max |onnxruntime - torch| = {self.worst:.3g} ({rows})"


def validate_onnx(
    model: nn.Module,
    onnx: bytes | str | os.PathLike,
    inputs: Iterable[torch.Tensor | np.ndarray],
    *,
    output: str = "probabilities",
    intra_op_threads: int = 1,
    extra_inputs: dict[str, torch.Tensor] | None = None,
) -> ExportCheck:
    """Run the ONNX model with onnxruntime (CPU) and the torch model on the same inputs; compare.

    Parameters
    ----------
    model : nn.Module
        The torch network the ONNX model was exported from (run in float32, eval mode).
    onnx : bytes or path
    inputs : iterable of (N, 3, H, W) float arrays in [0, 1]
    output : {"probabilities", "logits"}
        What the ONNX graph returns (as given to :func:`export_onnx`).
    extra_inputs : the graph's other inputs (e.g. ``{"se_gates": gates}``), fed to both

    Returns
    -------
    ExportCheck
        Shapes and max absolute differences, one per input.
    """
    ort = OnnxRuntimeBackend(onnx, intra_op_threads=intra_op_threads)
    ref = InferenceWrapper(copy.deepcopy(model).float().eval().cpu(), output=output).eval()
    res = ExportCheck()
    for x in inputs:
        t = torch.as_tensor(x, dtype=torch.float32)
        with torch.inference_mode():
            want = ref(t, **(extra_inputs or {}))
        got = ort.run(t, **(extra_inputs or {}))
        if got.shape != want.shape:
            raise AssertionError(f"onnxruntime output shape {tuple(got.shape)} != torch {tuple(want.shape)}")
        res.shapes.append(tuple(t.shape))
        res.max_abs_diff.append(float((got - want).abs().max()))
    return res
