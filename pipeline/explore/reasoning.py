"""What a registered model does on a puzzle, segment by segment (notebooks/02_reasoning.ipynb): the grid it predicts
after each ACT segment, which cells changed, and its halting Q-values (where it halts: ``HRM.wants_halt``)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.draw import draw, figure

log = logging.getLogger(__name__)


@dataclass
class Segment:
    step: int  # 1..max_steps (M_max unless asked for more)
    tokens: np.ndarray  # (seq_len,) the predicted grid after this segment
    changed: np.ndarray  # (seq_len,) bool: cells that differ from the previous segment's prediction
    q_halt: float
    q_continue: float | None  # None: the model trains no continue head (``halt_target: none``, TRM's rule)
    halts: bool  # the model's own decision to stop here (``HRM.wants_halt``)


@dataclass
class Trace:
    inputs: np.ndarray  # (seq_len,) the puzzle
    label: np.ndarray | None  # (seq_len,) the answer, when known (token 0: not scored)
    segments: list[Segment]

    @property
    def halted_at(self) -> int:
        """The segment where the model stops when run adaptively (``hrm solve``): its first halt, else M_max."""
        return next((s.step for s in self.segments if s.halts), len(self.segments))

    def correct(self, step: int) -> bool | None:
        if self.label is None:
            return None
        mask = self.label != 0
        return bool(np.array_equal(self.segments[step - 1].tokens[mask], self.label[mask]))


def load_model(model_uri: str, tracking_uri: str | None = None):
    """The registered pyfunc's HRM (eval mode, CPU), its task and its info (model.json)."""
    import mlflow
    import mlflow.pyfunc

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    solver = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    log.info("loaded %s: %s, M_max %d", model_uri, solver.info["task"], solver.model.config.halt_max_steps)
    return solver.model, solver.task, solver.info


def puzzles(model_uri: str, task, data: str | Path | None = None, n: int = 3) -> list[tuple]:
    """``n`` (inputs, label, puzzle id) triples: the first test puzzles of ``data`` when it is a dataset of the
    model's task, else the puzzles of the model's logged input example (no labels)."""
    if data is not None and (Path(data) / "metadata.json").is_file():
        from pipeline.data.loader import IGNORE_LABEL, load_split
        from pipeline.data.meta import read_metadata

        meta = read_metadata(data)
        if meta.task == task.name and meta.seq_len == task.seq_len:
            arrays = load_split(data, "test", limit=n)
            labels = np.where(arrays["labels"] == IGNORE_LABEL, 0, arrays["labels"])
            return [(x.astype(np.uint8), y.astype(np.uint8), int(p))
                    for x, y, p in zip(arrays["inputs"], labels, arrays["puzzle_ids"])]
        log.warning("%s holds %s puzzles of length %d, not the model's: using its input example", data, meta.task,
                    meta.seq_len)
    from mlflow.models import Model

    example = Model.load(model_uri).load_input_example()
    texts = list(example["puzzle"]) if example is not None else []
    return [(task.parse(t), None, 0) for t in texts[:n]]


def trace(model, inputs: np.ndarray, label: np.ndarray | None = None, *, puzzle_id: int = 0,
          max_steps: int | None = None) -> Trace:
    """Run every ACT segment (``max_steps``, default M_max) on one puzzle through ``hrm.infer``, recording each
    segment's prediction and Q-values."""
    import torch

    from hrm.infer import infer

    x = torch.as_tensor(np.asarray(inputs, dtype=np.int64)[None])  # (1, L)
    kept = infer(model, {"inputs": x, "puzzle_ids": torch.tensor([puzzle_id])}, max_steps=max_steps,
                 keep_steps=True).per_step
    halts = model.wants_halt(kept["q_halt"], kept["q_continue"])[:, 0].tolist()  # (S,)
    trained_continue = model.config.halt_target != "none"  # else its continue logit is an untrained head's
    segments, previous = [], None
    for step, (guess, q_halt, q_cont, stop) in enumerate(zip(kept["preds"][:, 0], kept["q_halt"][:, 0].tolist(),
                                                             kept["q_continue"][:, 0].tolist(), halts), start=1):
        tokens = guess.cpu().numpy().astype(np.uint8)  # (L,)
        changed = np.ones_like(tokens, bool) if previous is None else tokens != previous
        segments.append(Segment(step, tokens, changed, float(q_halt), float(q_cont) if trained_continue else None,
                                bool(stop)))
        previous = tokens
    return Trace(np.asarray(inputs, np.uint8), None if label is None else np.asarray(label, np.uint8), segments)


def table(t: Trace):
    """One row per segment: Q-values, the halting probability sigmoid(q_halt), cells changed, correct so far."""
    import pandas as pd

    return pd.DataFrame([{
        "segment": s.step, "q_halt": s.q_halt, "q_continue": s.q_continue,
        "p_halt": 1 / (1 + math.exp(-s.q_halt)), "halts": s.halts,
        "cells_changed": int(s.changed.sum()) if s.step > 1 else None, "correct": t.correct(s.step),
    } for s in t.segments]).set_index("segment")


def summary(traces: list[Trace], task=None):
    """One row per puzzle: where it halts, whether the answer there (and after every segment) is right and, with
    ``task``, whether it follows the puzzle's rules (``valid_at_halt``: what ``hrm solve`` and the server report;
    None where the task cannot tell)."""
    import pandas as pd

    return pd.DataFrame([{
        "halts_at": t.halted_at, "p_halt_there": 1 / (1 + math.exp(-t.segments[t.halted_at - 1].q_halt)),
        "correct_at_halt": t.correct(t.halted_at), "correct_at_M_max": t.correct(len(t.segments)),
        **({"valid_at_halt": task.follows_rules(t.segments[t.halted_at - 1].tokens, t.inputs)} if task else {}),
        "cells_changed": [int(s.changed.sum()) for s in t.segments[1:]],
    } for t in traces])


def more_compute(model, task, examples: list[tuple], *, multiples=(1, 2, 4), votes=(1, 4), seed: int = 0):
    """The example puzzles ((inputs, label, puzzle id) triples, as ``puzzles`` returns) answered with more segments
    (``multiples`` × M_max) and symmetry votes (``hrm.vote.answer``): one row per (max_steps, votes), with the share
    answered exactly (None without labels), the votes' agreement and the forward passes per puzzle."""
    import pandas as pd

    from hrm.vote import answer

    inputs = np.stack([x for x, _, _ in examples])  # (B, L)
    ids = np.array([p for _, _, p in examples])
    labelled = all(y is not None for _, y, _ in examples)
    M, rows = model.config.halt_max_steps, []
    for k in multiples:
        for v in votes:
            got = answer(model, task, inputs, puzzle_ids=ids, votes=v, max_steps=k * M, seed=seed)
            exact = (np.mean([task.score(p, y, x)["exact"] for p, (x, y, _) in zip(got.preds, examples)])
                     if labelled else None)
            rows.append({"max_steps": k * M, "votes": v, "exact": exact, "agreement": float(got.agreement.mean()),
                         "forward passes / puzzle": got.forward_passes})
    return pd.DataFrame(rows)


def draw_traces(traces: list[Trace], task):
    """One row per puzzle: the puzzle, the prediction after each segment (cells changed since the previous one
    shaded red; the segment where the model halts marked) and the answer when known."""
    segments = max(len(t.segments) for t in traces)
    labelled = any(t.label is not None for t in traces)
    fig, axes = figure(len(traces), 1 + segments + labelled, size=2.0)
    for row, t in enumerate(traces):
        draw(axes[row, 0], task, t.inputs, title=f"puzzle {row}")
        for s in t.segments:
            mark = (" HALT" if s.halts else " (M_max)") if s.step == t.halted_at else ""
            ok = t.correct(s.step)
            verdict = "" if ok is None else (" right" if ok else " wrong")
            draw(axes[row, s.step], task, s.tokens, givens=t.inputs, changed=s.changed if s.step > 1 else None,
                 title=f"segment {s.step}{mark}{verdict}\nq_halt {s.q_halt:+.2f}"
                       + (f"  q_cont {s.q_continue:+.2f}" if s.q_continue is not None else ""))
        if t.label is not None:
            draw(axes[row, -1], task, t.label, givens=t.inputs, title="answer")
        elif labelled:
            axes[row, -1].axis("off")
        for ax in axes[row, 1 + len(t.segments):(-1 if labelled else None)]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_q_values(traces: list[Trace]):
    """q_halt and q_continue over the segments, one line pair per puzzle; the model halts where q_halt crosses."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, t in enumerate(traces):
        steps = [s.step for s in t.segments]
        line, = ax.plot(steps, [s.q_halt for s in t.segments], marker="o", label=f"puzzle {i}: q_halt")
        if any(s.q_continue is not None for s in t.segments):  # a model with no continue head: q_halt alone
            ax.plot(steps, [s.q_continue for s in t.segments], marker="x", ls="--", color=line.get_color(),
                    label=f"puzzle {i}: q_continue")
        ax.axvline(t.halted_at, color=line.get_color(), alpha=0.3, lw=4)
    ax.set_xlabel("ACT segment")
    ax.set_ylabel("Q-value (logit)")
    ax.set_xticks(range(1, max(len(t.segments) for t in traces) + 1) if traces else [])
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
