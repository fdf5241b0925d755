import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "hrm"))  # shared fixtures (sudoku_fixture)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray of 2 CPUs for the tests of one module (one start per module), shut down after them; a module
    that needs another Ray (a dashboard, an S3 server) defines its own."""
    import ray

    from pipeline.ray_utils import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()

from tests.s3_server import s3  # noqa: E402,F401  (a real S3 API server on 127.0.0.1, for any test that asks)
