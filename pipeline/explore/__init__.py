"""Helpers of the notebooks (notebooks/): drawing puzzles, tracing the model's reasoning, reading sweeps.

``draw`` puzzles as coloured grids; ``puzzles`` small datasets and their augmentations (01_puzzles); ``reasoning``
the ACT segments of a registered model on a puzzle (02_reasoning); ``sweeps`` a Tune sweep read back from MLflow
(03_sweeps). The notebooks only call these and show what they return. Imports every layer but ``cli``.
"""

from pipeline.tracking.runs import quiet_downloads as _quiet_downloads

_quiet_downloads()  # no "Downloading artifacts" bars in the notebooks' outputs
