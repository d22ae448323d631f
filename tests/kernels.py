"""Floating-point kernel choices, in one place: the environment variables that make torch and numpy run other
kernels than this CPU's best, read when the library loads (so each choice runs in a process of its own).

torch picks ATen's vectorised loops (``ATEN_CPU_CAPABILITY``), oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) and
MKL's products (``MKL_ENABLE_INSTRUCTIONS``) by instruction set; numpy picks its BLAS kernels (OpenBLAS's
``OPENBLAS_CORETYPE``: SkylakeX on an AVX512 CPU, Haswell on an AVX2 one) and its own SIMD loops
(``NPY_DISABLE_CPU_FEATURES`` turns the higher ones off). The same computation rounds differently under each, and
an eigen-decomposition's eigenvector signs can flip. The step goldens measure their tolerances across the torch
choices; the search goldens pin numpy's (:func:`pinned_numpy`); CI runs the learners and the goldens again under
:func:`other_kernels`, so that a test that holds only by this CPU's rounding fails on the developer's own machine.
"""
from __future__ import annotations

import torch

try:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
except ImportError:  # numpy 1.x
    from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

TORCH_KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
TORCH_KERNEL_CHOICES: dict[str, dict[str, str]] = {
    "best": {},
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn_sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl_sse42": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "mkl_avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "all_avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "all_lowest": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def has_avx2() -> bool:
    """Whether this CPU has AVX2 and FMA (what OpenBLAS's Haswell kernels need)."""
    return bool(__cpu_features__.get("AVX2") and __cpu_features__.get("FMA3"))


def numpy_simd_above(level: str) -> str:
    """numpy's dispatched SIMD targets above ``level`` (``avx2``: its AVX512 loops; ``baseline``: all of them), as
    ``NPY_DISABLE_CPU_FEATURES`` takes them, by the names this numpy uses."""
    if level == "baseline":
        return ",".join(__cpu_dispatch__)
    return ",".join(name for name in __cpu_dispatch__ if name.startswith("AVX512") or name == "X86_V4")


def pinned_numpy() -> dict[str, str]:
    """numpy's kernels as every x86-64 CPU with AVX2 runs them: OpenBLAS's Haswell kernels on one thread, none of
    numpy's AVX512 loops. Computations through them give the same bits on any such CPU."""
    return {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1", "NPY_DISABLE_CPU_FEATURES": numpy_simd_above("avx2")}


def other_kernels() -> dict[str, str]:
    """Kernel variables that force every library below this CPU's best: torch's AVX2 kernels and numpy's Haswell
    BLAS without its AVX512 loops under an AVX512 CPU; the generic and SSE4 kernels (OpenBLAS's Prescott, numpy's
    baseline loops) under an AVX2 one. A result that holds only by this CPU's rounding fails there."""
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        return {**TORCH_KERNEL_CHOICES["all_avx2"], "OPENBLAS_CORETYPE": "Haswell",
                "NPY_DISABLE_CPU_FEATURES": numpy_simd_above("avx2")}
    return {**TORCH_KERNEL_CHOICES["all_lowest"], "OPENBLAS_CORETYPE": "Prescott",
            "NPY_DISABLE_CPU_FEATURES": numpy_simd_above("baseline")}
