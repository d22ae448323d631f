"""Numeric precision of the heavy forward passes: bf16 autocast where the hardware has it, fp32 elsewhere.

CAM-Net's forward, the SimCLR encoder's forward/backward and feature extraction for kNN/linear
evaluation run under ``torch.autocast(..., dtype=torch.bfloat16)`` when the precision is ``bf16``.
Weights, optimizer state, gradients and the loss reductions (NT-Xent, IMLE distances) stay fp32:
autocast only lowers the matrix multiplications and convolutions, and callers cast results back to
fp32 before reducing them. ``auto`` picks bf16 where it is native (a CPU reporting AMX-BF16 or
AVX512-BF16, or a CUDA device with bf16 support) and fp32 otherwise, because emulated bf16 is slower
than fp32; asking for ``bf16`` on such a CPU warns once, with the slowdown measured. Seeded runs
reproduce exactly within one precision on one machine at one torch thread count (a different thread
count changes the floating-point summation order, in fp32 too).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 instruction sets this CPU reports (``amx_bf16``, ``avx512_bf16``), from /proc/cpuinfo;
    none when torch is held below AVX512 (``ATEN_CPU_CAPABILITY=avx2``, as when emulating an AVX2-only CPU),
    since its kernels then do not use them."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return ()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, so no bf16 by default
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in ("amx_bf16", "avx512_bf16") if f in flags)


def cpu_name() -> str:
    """The CPU's model name and its widest bf16 unit, for the record of where a figure was measured (a KVM guest's
    model name can be generic: the unit tells the kinds of this project's machines apart)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    unit = "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "no bf16 unit"
    return f"{name} ({unit})"


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for ``device``; ``bf16``/``fp32`` are returned as given.

    :raises ValueError: an unknown precision, naming the valid ones.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_flags():
        _warn_emulated_bf16()
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_bf16_flags() else "fp32"


@functools.cache  # once per process
def _warn_emulated_bf16() -> None:
    warnings.warn("precision 'bf16' on a CPU without native bf16 (no amx_bf16 or avx512_bf16): bf16 is emulated, "
                  "and an env step measured 9x slower than in fp32 (4.4 s against 0.47 s on a 2-core AMD EPYC with "
                  "AVX2 only); use precision 'auto' or 'fp32'", RuntimeWarning, stacklevel=3)


def describe_precision(precision: str, device: str | torch.device = "cpu",
                       change_hint: str = "--env-kwargs precision:fp32") -> str:
    """One line for the start of a run: the precision chosen, why, and (for ``auto``) ``change_hint``."""
    chosen = resolve_precision(precision, device)
    device = torch.device(device)
    if precision != "auto":
        return f"precision: {chosen} (asked for)"
    if device.type == "cpu":
        why = f"CPU has {', '.join(cpu_bf16_flags())}" if cpu_bf16_flags() else "CPU has no native bf16"
    else:
        why = f"{device.type} {'supports' if chosen == 'bf16' else 'does not support'} bf16"
    return f"precision: {chosen} (auto: {why}; {change_hint} to change)"


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """A context in which matmuls/convolutions run in bf16 if ``precision`` (resolved) is ``bf16``."""
    device = torch.device(device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"autocast needs a resolved precision (bf16 or fp32), got {precision!r}")

