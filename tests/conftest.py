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


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray of 2 CPUs for the tests of one module (one start per module), shut down after them; a module
    that needs another Ray (a dashboard, an S3 server) defines its own."""
    import ray

    from pipeline.core.ray_start import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()

from tests.s3_server import s3  # noqa: E402,F401  (a real S3 API server on 127.0.0.1, for any test that asks)
