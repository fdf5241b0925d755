"""Measured training rates on GPUs, with their source: what ``hrm plan`` scales to a run's model and batch (by
model FLOPs, hrm/flops.py). Only measured figures belong here; a GPU without one is planned as "not measured"."""

from __future__ import annotations

from dataclasses import dataclass

PAPERS_CODE = ("the papers' own code on one H200, as issue #7 gives it (bench/NOTES.md, \"GPU (H200)\"); "
               "hrm-pipeline's own GPU rates are not measured yet")


@dataclass(frozen=True)
class GpuFigure:
    """One measured rate: ``examples_per_s`` of a ``flavour`` model training on ``task`` rows of ``seq_len``
    tokens at global batch ``batch`` on one ``gpu``."""

    gpu: str
    flavour: str  # hrm.config.FLAVOURS
    task: str
    seq_len: int
    vocab_size: int
    batch: int
    examples_per_s: float
    source: str


GPU_FIGURES = (
    GpuFigure("H200", "paper", "sudoku", 81, 11, 768, 9771, PAPERS_CODE),
    GpuFigure("H200", "trm", "sudoku", 81, 11, 768, 7749, PAPERS_CODE),
    GpuFigure("H200", "trm-mlp", "sudoku", 81, 11, 768, 5770, PAPERS_CODE),
    GpuFigure("H200", "paper", "maze", 900, 6, 128, 739, PAPERS_CODE),
)

GPU_MEMORY_GB = {"H100": 80.0, "H200": 141.0}  # the GPUs users rent for these runs, in GB (10⁹ bytes)
