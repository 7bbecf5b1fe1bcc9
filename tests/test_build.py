"""The extension loads and reports how it was built."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nucfast


def test_build_info_reports_the_build():
    info = nucfast.build_info()
    keys = {"cuda_compiled", "cuda_archs", "cuda_version", "torch_version", "ops", "ops_without_cuda"}
    assert set(info) >= keys
    assert info["openmp"] > 0, "CPU kernels must be built with OpenMP"
    assert info["ops"], "no nucfast ops are registered"
    # the CPU-only exemption covers exactly the documented fast paths, each of which exists
    from nucfast._backend import CPU_ONLY_OPS

    assert set(info["cpu_only_ops"]) == set(CPU_ONLY_OPS) <= set(info["ops"])
    if info["cuda_compiled"]:
        assert "8.0" in info["cuda_archs"] and "9.0" in info["cuda_archs"]
        assert info["cuda_version"]
        assert not info["ops_without_cuda"]
    if os.environ.get("NUCFAST_CUDA") == "1":
        assert info["cuda_compiled"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: run the kit itself")
def test_gpu_check_kit_stops_clearly_without_a_gpu(tmp_path):
    """scripts/gpu_check.sh, the prepared command for a lent GPU machine: without a GPU it must stop at
    once (exit 2) with a report saying why, not hang or half-run."""
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), str(tmp_path)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA device visible to torch" in (tmp_path / "report.md").read_text()
