"""bench/elastic.py's run file is a valid elastic run whose rank 0 is killed one step before its second checkpoint:
the worst moment, every - 1 steps since the last one (the benchmark itself needs a cluster: see its docstring)."""

import pytest

from bench.elastic import write_configs
from pipeline.data.config import load_config
from pipeline.train.config import load_train_config


@pytest.mark.parametrize("every", [4, 32])
def test_the_benchmark_run_is_elastic_and_ends_past_its_kill(tmp_path, every):
    max_steps = write_configs(tmp_path, every)
    cfg = load_train_config(tmp_path / "elastic.yaml")
    assert cfg.scaling.elastic and (cfg.scaling.min_workers, cfg.scaling.max_workers) == (1, 2)
    assert cfg.eval_interval == every and cfg.max_steps == max_steps > 2 * every and cfg.max_failures >= 1
    rows = load_config(tmp_path / "data.yaml").sudoku
    assert rows.count * (1 - rows.test_fraction) * rows.augmentations >= cfg.global_batch_size
