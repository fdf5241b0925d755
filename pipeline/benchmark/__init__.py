"""Benchmarks of the training job itself (``hrm bench``): ``reasoning``, accuracy against wall time on minimal 6×6
Sudoku for HRM and TRM side by side. A job: imports the layers below it (core, serving, tracking, data,
train)."""
