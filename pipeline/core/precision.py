"""The dtype HRM computes in: ``forward_dtype: auto`` resolved for the device at hand.

bfloat16 where the hardware does bfloat16 matmuls natively (CUDA GPUs that support it; CPUs with AVX512-BF16, AMX or
Arm BF16), float32 elsewhere: an emulated bfloat16 matmul is many times slower than a float32 one (AVX2-only x86:
~0.9 vs ~63 GFLOP/s at 1024²). Weights stay float32 either way (``hrm.layers``).
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

EXPLICIT = ("float32", "bfloat16", "float16")
MIN_SPEEDUP = 1.2  # on CPU, bfloat16 is chosen only when its matmuls are at least this much faster than float32's
PROBE_SIZE = 256  # the probe's square matmul: ~34 MFLOP, ≤ ~40 ms even where bfloat16 is emulated
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}
_announced: set[tuple[str, str]] = set()


def cpu_capability() -> str:
    """The CPU kernels torch dispatches to: ``AVX512``, ``AVX2``, ``DEFAULT``, ``SVE256``, …"""
    return torch.backends.cpu.get_cpu_capability()


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, macOS sysctl), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=2, check=True)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _best_matmul_seconds(dtype: torch.dtype, *, reps: int, budget_s: float) -> tuple[float, float]:
    """(fastest of up to ``reps`` timed matmuls after one warm-up, total time spent); stops once over ``budget_s``
    after at least one timed matmul."""
    a = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
    start = time.perf_counter()
    torch.mm(a, b)  # warm-up: kernel selection / JIT
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return best, time.perf_counter() - start


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """Whether bfloat16 matmuls on this CPU are native and clearly (``MIN_SPEEDUP``) faster than float32's.

    x86 without AVX-512 kernels has no native bfloat16: False at once. Elsewhere small matmuls are timed on one
    thread in each dtype, the bfloat16 side cut short once it has taken longer than the float32 side (so well under
    100 ms where bfloat16 is emulated). Once per process."""
    capability = cpu_capability()
    if platform.machine().lower() in _X86 and not capability.startswith("AVX512"):
        log.debug("CPU capability %s: no native bfloat16 matmul", capability)
        return False
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core speed; threads fighting over busy cores only add noise
    try:
        with torch.no_grad():
            f32, spent = _best_matmul_seconds(torch.float32, reps=5, budget_s=0.03)
            bf16, _ = _best_matmul_seconds(torch.bfloat16, reps=5, budget_s=spent)
    except RuntimeError as err:  # no bfloat16 matmul at all
        log.debug("bfloat16 matmul probe failed: %s", err)
        return False
    finally:
        torch.set_num_threads(threads)
    log.debug("CPU %s: %dx%d matmul float32 %.3f ms, bfloat16 %.3f ms (%.2fx)", capability, PROBE_SIZE, PROBE_SIZE,
              f32 * 1e3, bf16 * 1e3, f32 / bf16)
    return f32 / bf16 >= MIN_SPEEDUP


def _choose(requested: str, device: torch.device) -> tuple[str, str, bool]:
    """(dtype, reason, whether the reason is a warning)."""
    if requested in EXPLICIT:
        if requested == "bfloat16" and device.type == "cpu" and not cpu_bf16_is_fast():
            return requested, (f"set in the config; warning: this CPU ({cpu_capability()}) has no fast bfloat16 "
                               "matmul, expect it to be much slower than float32 (forward_dtype: auto avoids it)"), True
        return requested, "set in the config", False
    if requested != "auto":
        raise ValueError(f"forward_dtype must be 'auto' or one of {list(EXPLICIT)}, got {requested!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "float32", "auto: CUDA is not available", False
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16", "auto: this GPU computes bfloat16 natively", False
        return "float32", "auto: this GPU has no native bfloat16", False
    if device.type == "cpu":
        capability = cpu_capability()
        if cpu_bf16_is_fast():
            return "bfloat16", (f"auto: CPU {capability} has native bfloat16 matmul "
                                f"(>= {MIN_SPEEDUP}x float32 in a probe)"), False
        return "float32", f"auto: CPU {capability} has no fast bfloat16 matmul (emulated or no faster)", False
    return "float32", f"auto: float32 on {device.type}", False


def resolve_dtype(requested: str, device: torch.device | str) -> tuple[str, str]:
    """The dtype name HRM should compute in on ``device`` for the configured ``forward_dtype``, and a one-line reason.

    An explicit dtype is kept (bfloat16 on a CPU without fast bfloat16 with a warning). ``auto``: bfloat16 on CUDA
    where supported natively, on CPU where bfloat16 matmuls are native and faster (``cpu_bf16_is_fast``); float32
    otherwise (never float16 unless asked). The choice is logged once per process."""
    device = torch.device(device)
    dtype, reason, warn = _choose(requested, device)
    if (dtype, reason) not in _announced:
        _announced.add((dtype, reason))
        log.log(logging.WARNING if warn else logging.INFO, "forward dtype on %s: %s (%s)", device.type, dtype, reason)
    return dtype, reason


__all__ = ["resolve_dtype", "cpu_bf16_is_fast", "cpu_capability", "cpu_name", "MIN_SPEEDUP"]
