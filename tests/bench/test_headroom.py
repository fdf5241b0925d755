"""bench/headroom.py and `bench/scale.py ingest`: worker 0's share and batches of a real tiny dataset, at 1 and 2
workers, on the suite's Ray; the figures consistent with each other and with the share's bytes."""

import pytest
import yaml

from bench.headroom import GOAL, GPU_DEMAND, measure
from bench.scale import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ray_session):
    from pipeline.core.config_io import from_dict
    from pipeline.data.build import build_dataset
    from pipeline.data.config import DataConfig

    cfg = from_dict(DataConfig, {"name": "tiny", "task": "sudoku", "seed": 3, "rows_per_file": 40, "sudoku": {
        "box": [2, 2], "count": 60, "min_rating": 0, "test_fraction": 0.2, "augmentations": 4, "chunk_size": 20}})
    return build_dataset(cfg, tmp_path_factory.mktemp("headroom") / "tiny").path


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_zero_reads_its_share_and_assembles_batches(dataset, workers):
    from pipeline.data.loader import read_metadata

    meta = read_metadata(dataset)
    n, seq_len = meta.counts["train"], meta.seq_len
    row = measure(str(dataset), global_batch=8, shards=8, workers=workers, seconds=0.3)
    assert row.task == "sudoku" and row.workers == workers and row.local_batch == 8 // workers
    assert row.rows == (8 // workers) * n // 8  # its shards: shard k holds ids [k·n/8, (k+1)·n/8)
    assert row.share_mib * (1 << 20) == row.rows * (2 * seq_len + 4)  # uint8 inputs and labels, int32 puzzle ids
    assert row.read_s > 0 and 1 <= row.batches <= 500  # epochs on for 0.3 s, at most 500 batches
    assert row.tokens_per_s == pytest.approx(row.examples_per_s * seq_len)
    assert row.demand == GPU_DEMAND["sudoku"] and row.ratio == pytest.approx(row.examples_per_s / row.demand)


def test_the_ingest_verb_prints_a_row_per_worker_count_and_refuses_what_is_missing(dataset, tmp_path, capsys):
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({"name": "tiny", "global_batch_size": 8, "flavour": "debug"}))
    code = main(["ingest", "--train", str(train), "--data", str(dataset), "--workers", "1", "2", "--seconds", "0.2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| sudoku |")]
    assert [line.split("|")[2].strip() for line in rows] == ["1", "2"]
    assert all(("met" in line) == (float(line.split("|")[-2].split("×")[0]) >= GOAL) for line in rows)
    assert code == (0 if all("met" in line for line in rows) else 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "--train", str(train), "--data", str(tmp_path / "nope")])
    assert exit_info.value.code == 2 and "nope (no metadata.json: build it first)" in capsys.readouterr().err
