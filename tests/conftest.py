import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "hrm"))  # shared fixtures (sudoku_fixture)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

from tests.s3_server import s3  # noqa: E402,F401  (a real S3 API server on 127.0.0.1, for any test that asks)
