"""forward_dtype: auto resolved per device (pipeline.core.precision): the CPU probe decides on CPU, bf16 support on CUDA; an
explicit dtype always wins."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from pipeline.core import precision
from pipeline.core.precision import resolve_dtype


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the CPU probe reports; count its calls."""
    calls = []

    def set_(fast: bool) -> list:
        monkeypatch.setattr(precision, "cpu_bf16_is_fast", lambda: calls.append(fast) or fast)
        return calls
    return set_


@pytest.fixture
def cuda(monkeypatch):
    """A CUDA device that may or may not compute bfloat16 natively (no CUDA tensor is ever made)."""
    asked = []

    def set_(available: bool, bf16: bool) -> list:
        def is_bf16_supported(including_emulation: bool = True) -> bool:
            asked.append(including_emulation)
            return bf16 or including_emulation  # a pre-Ampere GPU reports emulated bf16 as supported

        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        return asked
    return set_


def test_cpu_auto_follows_the_probe(cpu_bf16):
    cpu_bf16(True)
    dtype, reason = resolve_dtype("auto", "cpu")
    assert dtype == "bfloat16" and reason.startswith("auto: CPU") and "native" in reason
    cpu_bf16(False)
    dtype, reason = resolve_dtype("auto", torch.device("cpu"))
    assert dtype == "float32" and reason.startswith("auto: CPU") and "no fast bfloat16" in reason


@pytest.mark.parametrize("explicit", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("fast", [True, False])
def test_explicit_dtype_wins_on_cpu(cpu_bf16, explicit, fast):
    cpu_bf16(fast)
    dtype, reason = resolve_dtype(explicit, "cpu")
    assert dtype == explicit and reason.startswith("set in the config")
    assert ("warning" in reason) == (explicit == "bfloat16" and not fast)


def test_explicit_bf16_on_slow_cpu_warns_once(cpu_bf16, caplog, monkeypatch):
    cpu_bf16(False)
    monkeypatch.setattr(precision, "_announced", set())  # as in a fresh process
    with caplog.at_level(logging.INFO, logger="pipeline.core.precision"):
        for _ in range(3):
            assert resolve_dtype("bfloat16", "cpu")[0] == "bfloat16"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "much slower than float32" in warnings[0].getMessage()


def test_the_choice_is_logged_once(cpu_bf16, caplog, monkeypatch):
    cpu_bf16(True)
    monkeypatch.setattr(precision, "_announced", set())
    with caplog.at_level(logging.INFO, logger="pipeline.core.precision"):
        for _ in range(3):
            resolve_dtype("auto", "cpu")
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "bfloat16" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("available", "bf16", "expected"), [(True, True, "bfloat16"), (True, False, "float32"),
                                                             (False, True, "float32")])
def test_cuda_auto(cuda, cpu_bf16, available, bf16, expected):
    probe = cpu_bf16(True)  # the CPU probe must play no part on CUDA
    asked = cuda(available, bf16)
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        assert resolve_dtype("auto", device)[0] == expected
    assert probe == []
    assert (asked != []) == available
    assert all(flag is False for flag in asked)  # native bfloat16 only, never emulated


def test_cuda_explicit_dtype_wins(cuda):
    cuda(True, False)
    assert resolve_dtype("float16", "cuda") == ("float16", "set in the config")
    assert resolve_dtype("bfloat16", "cuda") == ("bfloat16", "set in the config")


def test_other_devices_and_bad_names(cpu_bf16):
    cpu_bf16(True)
    assert resolve_dtype("auto", "meta")[0] == "float32"
    with pytest.raises(ValueError, match="forward_dtype"):
        resolve_dtype("half", "cpu")


def test_the_real_probe_is_quick_cached_and_restores_threads():
    precision.cpu_bf16_is_fast.cache_clear()
    threads = torch.get_num_threads()
    start = time.perf_counter()
    first = precision.cpu_bf16_is_fast()
    took = time.perf_counter() - start
    assert isinstance(first, bool) and took < 0.5, took
    assert torch.get_num_threads() == threads
    start = time.perf_counter()
    assert precision.cpu_bf16_is_fast() is first
    assert time.perf_counter() - start < 0.001
    info = precision.cpu_bf16_is_fast.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert resolve_dtype("auto", "cpu")[0] == ("bfloat16" if first else "float32")


def test_avx2_x86_is_float32_without_timing(monkeypatch):
    """x86 whose kernels stop at AVX2 has no native bfloat16: float32 without running a matmul."""
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(precision, "_best_matmul_seconds", lambda *a, **k: pytest.fail("timed a matmul"))
    precision.cpu_bf16_is_fast.cache_clear()
    try:
        assert precision.cpu_bf16_is_fast() is False
        assert resolve_dtype("auto", "cpu") == ("float32", "auto: CPU AVX2 has no fast bfloat16 matmul "
                                                           "(emulated or no faster)")
    finally:
        precision.cpu_bf16_is_fast.cache_clear()


@pytest.mark.parametrize(("f32", "bf16", "expected"), [(1.0, 0.5, True), (1.0, 0.9, False), (1.0, 30.0, False)])
def test_probe_needs_a_clear_speedup(monkeypatch, f32, bf16, expected):
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    times = {torch.float32: f32, torch.bfloat16: bf16}
    monkeypatch.setattr(precision, "_best_matmul_seconds", lambda dtype, **k: (times[dtype], times[dtype]))
    precision.cpu_bf16_is_fast.cache_clear()
    try:
        assert precision.cpu_bf16_is_fast() is expected
    finally:
        precision.cpu_bf16_is_fast.cache_clear()
