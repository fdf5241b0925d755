"""The export format: what a served or registered model is, read and written by training, tracking and serving.

An export folder (inside every checkpoint, and the MLflow model's artifacts) holds two files: ``model.pt``, the
weights to serve (the EMA copy when training keeps one), a plain state dict loaded with ``weights_only``; and
``model.json``, the model config with the task and dataset facts (``{"model": {...}, "task": ..., ...}``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from hrm.config import ModelConfig
from hrm.model import HRM
from pipeline.core.config_io import from_dict, to_dict


def write(folder: Path, model: HRM, info: dict[str, Any]) -> None:
    """Write ``model``'s export pair into ``folder``: its weights and its config with ``info`` beside it."""
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "model.json").write_text(json.dumps({"model": to_dict(model.config), **info}, indent=2))


EXPORT_FILES = ("model.pt", "model.json")  # what serving needs of a checkpoint: weights (EMA when on) + config


def copy_export(checkpoint: Path, folder: Path) -> Path:
    """Copy a checkpoint's export pair (not ``state.pt``: optimizer, RNG and training copies) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in EXPORT_FILES:
        if not (checkpoint / name).is_file():
            raise FileNotFoundError(f"{checkpoint}: no {name}; not a checkpoint of this package")
        shutil.copy2(checkpoint / name, folder / name)
    return folder


def load_export(folder: Path, map_location: str = "cpu") -> tuple[HRM, dict[str, Any]]:
    """The served model of a checkpoint (or MLflow artifact) folder, in eval mode, and its info; it computes in the
    dtype ``auto`` chooses for ``map_location``, whatever it was trained in (bfloat16 on a GPU is emulated, and
    slow, on many CPUs)."""
    from pipeline.core.precision import resolve_dtype

    info = json.loads((Path(folder) / "model.json").read_text())
    config = from_dict(ModelConfig, info["model"], where="model.json")
    model = HRM(dataclasses.replace(config, forward_dtype=resolve_dtype("auto", map_location)[0]))
    model.load_state_dict(torch.load(Path(folder) / "model.pt", map_location=map_location, weights_only=True))
    return model.eval(), info
