"""Foundations every job uses: configs and YAML, names, locks, storage, precision, progress, Ray start-up, the export
format, puzzles drawn as grids. Imports ``hrm`` and ``pipeline.core`` only."""
