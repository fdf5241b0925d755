import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "hrm"))  # shared fixtures (sudoku_fixture)

# Ray Train's controller looks at its workers every 2 s by default, and each step of a run's life (scheduling,
# running, finished) waits for such a look: ~4 s of every tiny training run in the tests. Looking every 0.25 s
# changes nothing else; the Ray processes and `hrm` commands the tests start inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
# Two of Ray Train's observers that no test reads, off for the runs the tests start (a tiny run 1-1.5 s and ~2.5
# CPU-s shorter, measured alternately): the state actor that lists Train runs in the dashboard's API (`hrm` turns it
# on; the README cluster block's test turns it on in its own shell and reads that API) and Train's Prometheus metrics.
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")


@pytest.fixture(scope="session", autouse=True)
def _migrated_sqlite_template(tmp_path_factory):
    """A new sqlite MLflow store made in this process starts as a copy of one made once per session: MLflow's table
    creation and migrations cost 1.6 s per store here, and the tests make dozens. The copy is the same file MLflow
    would have made (its tables and its migration stamp); a store that is not new, not a file or not sqlite is made
    by MLflow itself. Stores made by the ``hrm`` commands the tests start are made as usual."""
    import shutil

    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store

    real = db_utils._initialize_tables
    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"

    def initialize(engine) -> None:
        database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
        if not database or database == ":memory:" or not Path(database).is_file() or Path(database).stat().st_size:
            return real(engine)
        if not template.exists():
            made = db_utils.create_sqlalchemy_engine_with_retry(f"sqlite:///{template}")
            real(made)
            made.dispose()
        engine.dispose()
        shutil.copyfile(template, database)
        engine.dispose()

    db_utils._initialize_tables = registry_store._initialize_tables = initialize
    yield
    db_utils._initialize_tables = registry_store._initialize_tables = real


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


_SHARED_RAY: dict[str, str] = {}  # the GCS address of the suite's local Ray, once started


def pytest_collection_modifyitems(config, items):
    """The modules that use the suite's Ray (``ray_session``) run last, one after another, each in its usual order:
    Ray then starts once and does not idle beside the other tests (~0.1 core of its daemons)."""
    module = {item: item.getparent(pytest.Module) for item in items}
    uses_ray = {module[item] for item in items if "ray_session" in getattr(item, "fixturenames", ())}
    items[:] = [i for i in items if module[i] not in uses_ray] + [i for i in items if module[i] in uses_ray]


@pytest.fixture(scope="module", autouse=True)
def _no_stray_ray():
    """After each module: a Ray that one of its tests started in this process (an in-process ``hrm`` command) is
    shut down, so that it idles beside no later test; the suite's own Ray stays."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and \
            ray.get_runtime_context().gcs_address != _SHARED_RAY.get("address"):
        ray.shutdown()


@pytest.fixture(scope="session")
def _shared_ray(request):
    """The S3 server first (see ``ray_session``); shuts the suite's local Ray down at the end of the session."""
    request.getfixturevalue("s3")
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_session(_shared_ray):
    """The suite's one local Ray, for every module that asks: 2 CPUs and the dashboard (what Tune's trials need),
    started after the S3 server (its workers inherit the AWS environment that points at it). Started at the first
    module that asks and kept for the others: a start and a shutdown cost ~5 s here. A Ray that is not this one (a
    test started its own, or shut this one down) is replaced when the next module asks."""
    import ray

    from pipeline.core.ray_start import init_ray

    if ray.is_initialized() and ray.get_runtime_context().gcs_address != _SHARED_RAY.get("address"):
        ray.shutdown()
    if not ray.is_initialized():
        init_ray(num_cpus=2, dashboard=True)
        _SHARED_RAY["address"] = ray.get_runtime_context().gcs_address
    yield


from tests.s3_server import s3  # noqa: E402,F401  (a real S3 API server on 127.0.0.1, for any test that asks)
