"""Build nucfast and its one native extension, nucfast._C.

A CUDAExtension (nvcc, sm_80 and sm_90 unless TORCH_CUDA_ARCH_LIST says otherwise) when a CUDA build of
torch and a CUDA toolkit are present, a CppExtension otherwise. NUCFAST_CUDA=1 makes a missing CUDA
toolchain an error (CI uses it), NUCFAST_CUDA=0 builds the CPU-only extension (fast local iteration).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """The real toolkit root. `nvcc` on PATH may be a wrapper script, which makes torch guess wrong."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        try:  # a wrapper script: `exec /path/to/cuda/bin/nvcc "$@"`
            with open(real, "rb") as fh:
                head = fh.read(4096)
            if head.startswith(b"#!"):
                for m in re.finditer(rb"(/\S+)/bin/nvcc", head):
                    candidates.insert(0, m.group(1).decode())
        except OSError:
            pass
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for c in candidates:
        if os.path.exists(os.path.join(c, "include", "cuda_runtime.h")) and os.path.exists(
            os.path.join(c, "bin", "nvcc")
        ):
            return c
    return None


_cuda_home = _find_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

import torch  # noqa: E402  (CUDA_HOME must be set before cpp_extension reads it)
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda():
    mode = os.environ.get("NUCFAST_CUDA", "auto").lower()
    have = torch.version.cuda is not None and _cuda_home is not None
    if mode in ("0", "false", "no", "off"):
        return False
    if mode in ("1", "true", "yes", "on") and not have:
        sys.exit(
            "NUCFAST_CUDA=1 but CUDA cannot be built: "
            + ("torch is a CPU-only build" if torch.version.cuda is None else "no CUDA toolkit (nvcc) found")
        )
    return have


def _nvcc_version():
    try:
        out = subprocess.run(
            [os.path.join(_cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        m = re.search(r"release (\d+\.\d+)", out)
        return m.group(1) if m else ""
    except Exception:
        return ""


def _extension():
    with_cuda = _want_cuda()
    sources = sorted(
        glob.glob("csrc/core/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/ops/cpu/*.cpp")
    )
    stems = [os.path.splitext(os.path.basename(s))[0] for s in sources + glob.glob("csrc/ops/cuda/*.cu")]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        sys.exit(f"source file stems must be unique (object files collide): {sorted(dup)}")
    include_dirs = [os.path.join(HERE, "csrc")]
    define_macros = [("NF_TORCH_VERSION", f'"{torch.__version__}"')]
    # -fno-math-errno -fno-trapping-math: nucfast never reads errno or floating-point traps; both otherwise keep
    # loops with sqrtf or float selects from vectorising (values are unchanged: no reassociation, no FMA)
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wextra",
           "-Wno-unused-parameter"]
    extra = {"cxx": cxx}
    if with_cuda:
        sources += sorted(glob.glob("csrc/ops/cuda/*.cu"))
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
        define_macros += [
            ("NF_WITH_CUDA", "1"),
            ("NF_CUDA_ARCHS", f'"{archs}"'),
            ("NF_CUDA_VERSION", f'"{_nvcc_version()}"'),
        ]
        # Headers of the pip `nvidia` packages (cuBLAS, cuSPARSE, ... as torch's CUDA build ships them).
        purelib = sysconfig.get_paths()["purelib"]
        include_dirs += sorted(glob.glob(os.path.join(purelib, "nvidia", "*", "include")))
        extra["nvcc"] = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            "nucfast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "nucfast._C",
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )


setup(
    packages=find_packages(include=["nucfast", "nucfast.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
