"""``hrm data show``: a dataset's metadata summary and a few examples rendered as grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.loader import IGNORE_LABEL, load_split
from pipeline.data.meta import read_metadata


def side_by_side(left: str, right: str, titles: tuple[str, str] = ("input", "label"), gap: int = 4) -> str:
    """Two multi-line blocks next to each other, each under its title."""
    a, b = [titles[0], *left.splitlines()], [titles[1], *right.splitlines()]
    width = max(len(line) for line in a)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join((x.ljust(width + gap) + y).rstrip() for x, y in zip(a, b))


def summary(path: str | Path) -> str:
    """The metadata of dataset ``path`` as aligned text lines (``hrm data show``)."""
    meta = read_metadata(path)
    lines = [
        f"dataset      {meta.path}",
        f"task         {meta.task} {meta.task_args}",
        f"vocab/seq    vocab_size {meta.vocab_size}, seq_len {meta.seq_len}, "
        f"puzzle identifiers {meta.num_puzzle_identifiers}",
        f"rows         train {meta.counts.get('train', 0):,}, test {meta.counts.get('test', 0):,}",
        f"originals    train {meta.groups.get('train', 0):,}, test {meta.groups.get('test', 0):,}",
        f"seed         {meta.seed} (fingerprint {meta.fingerprint})",
        f"code         {meta.code_version}",
        f"created      {meta.created}",
    ]
    if meta.stats:
        lines.append("stats        " + ", ".join(f"{k} {v}" for k, v in meta.stats.items()))
    return "\n".join(lines)


def show(path: str | Path, split: str = "train", n: int = 3) -> str:
    """Summary plus the first ``n`` examples of ``split`` (input and label side by side)."""
    meta = read_metadata(path)
    task = meta.make_task()
    data = load_split(path, split, limit=n, with_ids=True)
    blocks = [summary(path)]
    for i in range(len(data["inputs"])):
        labels = np.where(data["labels"][i] == IGNORE_LABEL, 0, data["labels"][i])
        pid = int(data["puzzle_ids"][i])
        name = f" ({meta.puzzle_identifiers[pid]})" if meta.puzzle_identifiers else ""
        head = (f"--- {split} example {int(data['example_ids'][i])}: group {int(data['group_ids'][i])}, "
                f"puzzle id {pid}{name}")
        blocks.append(head + "\n" + side_by_side(task.render(data["inputs"][i]), task.render(labels)))
    if not len(data["inputs"]):
        blocks.append(f"(the {split} split is empty)")
    return "\n\n".join(blocks)
