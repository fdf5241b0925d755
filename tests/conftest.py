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
