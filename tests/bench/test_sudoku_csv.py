"""bench/sudoku_csv.py: files in the published Sudoku-Extreme layout that our own CSV import reads back whole, every
row a unique-solution puzzle rated as hard as its original."""

from bench.sudoku_csv import HEADER, write_csv
from hrm.tasks.sudoku import read_csv_arrays
from hrm.tasks.sudoku_solver import canonical_grid


def test_a_generated_file_reads_back_row_for_row(tmp_path):
    path = write_csv(tmp_path / "train.csv", rows=250, originals=4, seed=1)
    assert path.read_bytes().startswith(HEADER) and not list(tmp_path.glob(".*tmp*"))
    puzzles, solutions, ratings, lines, skipped = read_csv_arrays(path, check_unique=True)
    assert (len(puzzles), skipped) == (250, 0) and list(lines) == list(range(2, 252))
    assert (ratings >= 10).all()
    assert ((puzzles == 0) | (puzzles == solutions)).all()
    # every row is one of the 4 originals under a symmetry: 4 canonical forms at most, more than one in use
    forms = {canonical_grid(p).tobytes() for p in puzzles}
    assert 1 < len(forms) <= 4
