"""Dataset generation (``hrm data build``, Ray Data) and loading (``pipeline.data.loader``).

Where things are:

- ``build``: ``build_dataset``, the build as a sequence of stages (originals → split → plan → augment and write),
  and ``check_existing``;
- ``make_originals``: stage 1, where originals are made (generated, or imported and checked) on Ray Data;
- ``split``: the train/test split (Sudoku and Maze; ARC splits by source in ``hrm.tasks.arc_sources``);
- ``write``: where the dataset is written: stage 2 (augment → ``write_parquet``), metadata.json, publishing;
- ``builder``: what every task's builder implements (``Builder``); ``grid_builder`` for Sudoku and Maze;
  ``build_sudoku``, ``build_maze``, ``build_arc``: the builders of each task; ``builders``: the registry by task;
- ``config``, ``meta``, ``loader``, ``tokens``, ``show``: configs, metadata.json, reading a dataset back.

Submodules import Ray only when a function needs it; importing this package is cheap. Imports ``pipeline.core``
and ``pipeline.tracking.version`` (the code version in metadata.json).
"""
