"""bench/ingest.py runs end to end at a tiny size and reports consistent figures."""

import pytest

pytestmark = pytest.mark.slow


def test_ingest_bench_runs_tiny(capsys, ray_session):
    from bench.ingest import main, measure

    r = measure(rows=300, part_rows=70, batch=16, steps=1, warmup=1, run_steps=10)
    assert r["read_s"] > 0 and r["batch_s"] > 0 and r["step_s"] > 0
    assert r["ingest_per_step_s"] == pytest.approx((r["read_s"] + 10 * r["batch_s"]) / 10)
    assert r["ratio"] == pytest.approx(r["ingest_per_step_s"] / r["step_s"])
    assert main(["--rows", "200", "--part-rows", "50", "--batch", "8", "--steps", "1", "--warmup", "1",
                 "--run-steps", "5"]) == 0
    assert "of the step (target <= 5%" in capsys.readouterr().out
