"""The model FLOP count (hrm/flops.py) against the issue's figure: one HRM Sudoku step ≈ 27.5 TFLOP (64 block passes)."""

import pytest

from hrm.config import model_config
from hrm.flops import block_passes, step_flops


def test_paper_step_is_64_block_passes_and_27_5_tflop_of_linears():
    c = model_config("paper", vocab_size=11, seq_len=81)
    assert block_passes(c) == 64
    linears_only = 64 * 768 * 82 * 2 * (4 * 512 * 512 + 3 * 512 * 1536)
    assert linears_only / 1e12 == pytest.approx(27.5, abs=0.05)
    # per token and block: qkv + out (4·D²), SwiGLU (3·D·1536), QKᵀ and AV (2·S·D), S = 81 + 1 prefix position;
    # ×2 FLOPs per multiply-add; plus the lm head (81 positions, V = 11) forward and backward (×3)
    exact = 64 * 768 * 82 * 2 * (4 * 512 * 512 + 3 * 512 * 1536 + 2 * 82 * 512) + 3 * 2 * 768 * 81 * 512 * 11
    assert step_flops(c, 768) == pytest.approx(exact, rel=1e-12)


def test_trm_has_no_extra_segment():
    c = model_config("trm", vocab_size=11, seq_len=81)  # N 3, T 6, 2 layers: 3·7·2 forward + 2·7·2 backward
    assert block_passes(c) == 42 + 28


@pytest.mark.parametrize("q_target, passes", [("extra_segment", 64), ("lagged", 40), ("none", 40)])
def test_only_the_extra_segment_rule_pays_for_a_second_segment(q_target, passes):
    assert block_passes(model_config("paper", q_target=q_target)) == passes  # 24 forward + 16 backward (+ 24)


def test_step_bench_rows_of_the_same_math_give_the_same_losses():
    """bench/step.py seeds weights and batch per row: two eager float32 rows match loss for loss; lagged differs."""
    from bench.step import Row, measure

    row = Row("debug", dict(vocab_size=8, seq_len=8, forward_dtype="float32"), batch=4)
    a, b = (measure(row, steps=2, warmup=1, device="cpu") for _ in range(2))
    assert a["dtype"] == "float32" and len(a["losses"]) == 3 and (a["losses"] == b["losses"]).all()
    lagged = Row("debug", dict(vocab_size=8, seq_len=8, forward_dtype="float32", q_target="lagged"), batch=4)
    assert not (measure(lagged, steps=2, warmup=1, device="cpu")["losses"] == a["losses"]).all()
