"""The extension loads and reports how it was built."""

import os

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
