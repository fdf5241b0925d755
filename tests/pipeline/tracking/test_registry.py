"""The registry's champion: moved only between versions that solve the same puzzles (task, its arguments, sequence
length, vocabulary: tags every registered version carries)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.tracking import registry

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
from tiny_registry import register_tiny_model  # noqa: E402


def test_a_model_of_other_puzzles_never_takes_the_champion(tmp_path, caplog):
    """The probe's case: a 4×4 model took @champion from a 9×9 one of the same name."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    nine = register_tiny_model(store, "sudoku", tmp_path / "9x9", box=(3, 3))  # the champion (first version)
    four = register_tiny_model(store, "sudoku", tmp_path / "4x4", box=(2, 2))
    client = MlflowClient(store)
    tags = client.get_model_version("sudoku", four).tags
    assert {k: json.loads(tags[k]) for k in registry.KIND_TAGS} == {
        "hrm.task": "sudoku", "hrm.task_args": {"box": [2, 2]}, "hrm.seq_len": 16, "hrm.vocab_size": 6}
    assert registry.promote_if_better(store, "sudoku", four, "eval/exact_accuracy", 0.99) is False  # better, other
    assert str(client.get_model_version_by_alias("sudoku", registry.CHAMPION).version) == nine
    assert "solves other puzzles than the champion" in caplog.text and 'seq_len 16 against 81' in caplog.text


def race_versions(store: str, name: str, count: int, folder: Path) -> list[str]:
    """``count`` versions of ``name`` that solve the same puzzles (the kind tags), with no model in them."""
    client = MlflowClient(store)
    client.create_registered_model(name)
    versions = []
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(count):
        version = client.create_model_version(name, source=str(folder)).version
        for key in registry.KIND_TAGS:
            client.set_model_version_tag(name, version, key, '"same"')
        versions.append(str(version))
    return versions


def test_runs_promoting_at_once_leave_the_best_one_champion(tmp_path, monkeypatch):
    """Eight versions promote themselves at once, each slowed between its compare and its set. Read-then-write let
    every one of them see no champion and set the alias, the last writer winning whatever its score; under the
    registry lock each compares against the champion the one before it set."""
    import threading
    import time

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = race_versions(store, "race", 8, tmp_path / "empty")
    real = MlflowClient.set_registered_model_alias

    def slow(self, *args, **kwargs):
        time.sleep(0.2)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", slow)
    scores = [0.3, 0.8, 0.1, 0.5, 0.7, 0.2, 0.6, 0.4]
    errors: list[BaseException] = []

    def promote(version: str, score: float) -> None:
        try:
            registry.promote_if_better(store, "race", version, "eval/exact_accuracy", score)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=promote, args=(v, s)) for v, s in zip(versions, scores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    client = MlflowClient(store)
    assert str(client.get_model_version_by_alias("race", registry.CHAMPION).version) == versions[scores.index(0.8)]
    names = [m.name for m in client.search_registered_models()]
    assert names == ["race"]  # the lock is gone


def test_a_lock_left_by_a_dead_holder_is_taken_over_and_a_live_one_waited_for(tmp_path):
    import pytest

    from pipeline.tracking.registry_lock import held, lock_name

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (version,) = race_versions(store, "locked", 1, tmp_path / "empty")
    client = MlflowClient(store)
    client.create_registered_model(lock_name("locked"), tags={"hrm.lock_since": "1000.0"})  # 1970: its holder died
    assert registry.promote_if_better(store, "locked", version, "eval/exact_accuracy", 0.5) is True
    with held(client, "locked"):  # a live holder: the next one waits, then gives up saying why
        with pytest.raises(TimeoutError, match="the registry lock 'locked.champion-lock' is held by another run"):
            with held(MlflowClient(store), "locked", wait_s=0.5):
                pass
    assert [m.name for m in client.search_registered_models()] == ["locked"]


def test_a_lock_released_while_mlflow_words_its_taken_error_is_taken(tmp_path, monkeypatch):
    """MLflow's store answers a create of a taken name by looking the model up to word its error; a holder that
    released the lock in between made that a 'not found' error, which failed a promotion (seen once in the race
    above, in a fresh-clone suite). The waiter takes the lock instead."""
    import os
    import time

    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from pipeline.tracking.registry_lock import held, lock_name

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    name = lock_name("m")
    client.create_registered_model(name, tags={"hrm.lock_since": f"{time.time():.3f}"})  # a live holder
    real_get, released = SqlAlchemyStore.get_registered_model, []

    def released_meanwhile(self, model_name):
        if model_name == name and not released:  # the holder releases between the failed insert and the look-up
            released.append(model_name)
            self.delete_registered_model(model_name)
        return real_get(self, model_name)

    monkeypatch.setattr(SqlAlchemyStore, "get_registered_model", released_meanwhile)
    with held(client, "m", wait_s=5):
        assert released == [name]
        assert client.get_registered_model(name).tags["hrm.lock_holder"].endswith(f":{os.getpid()}")
    assert client.search_registered_models() == []
