"""The paper's datasets built at full size on this machine, measured (#25, tables 1 to 4).

    python bench/scale.py builds                                  # every paper data config, full size
    python bench/scale.py builds --only sudoku-extreme-csv        # the CSV import, on files of the published size
    python bench/scale.py builds --only arc-agi-1 --scale 0.01    # a quick look
    python bench/scale.py memory --only sudoku-extreme-1k --scales 1 4    # peak memory against the row count
    python bench/scale.py workers --only sudoku-extreme-1k --workers 1 2  # how the build scales
    python bench/scale.py hosts --only sudoku-extreme-1k  # on two Ray hosts against one: bench/two_hosts.py
    python bench/scale.py builds --only maze-hard-1k --out /data --keep   # kept: /data/maze-hard-1k-x1-wall
    python bench/scale.py ingest --train maze-hard-1k --data /data/maze-hard-1k-x1-wall   # bench/headroom.py
    python bench/scale.py steps --train maze-hard-1k maze-hard-1k-trm --data /data/maze-hard-1k-x1-wall \
        /data/maze-hard-1k-x1-wall                       # the paper models' steps on CPU: bench/paper_steps.py

Each build is ``hrm data build`` in a process of its own (an embedded local Ray, ``HRM_PROGRESS=lines``), its whole
process tree sampled every 0.25 s with psutil (what Ray's dashboard shows per worker): the driver's peak RSS, the
largest peak of any Ray worker process (``ray::…``: the tasks of both stages), the peak of the sum of all
processes' RSS (driver, workers and Ray's daemons; pages they share, such as Ray's object store, counted in each: an
upper bound), wall time, rows, bytes on disk and rows/s per worker. ``--scale``
multiplies the rows of a config (Sudoku: augmentations; Maze: mazes; ARC: variants per task; the CSV import: the
rows of its files too), so ``memory`` checks
that a build's memory is bounded by its chunks and parts, not by the dataset. Results are printed as a table and
appended to ``--json`` (one JSON object a build). The figures depend on the CPU (say which), the row counts do not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.sampler import run_sampled  # noqa: E402
from bench.sudoku_csv import official_csvs  # noqa: E402
from pipeline.core.config_io import CONFIGS  # noqa: E402
from pipeline.core.precision import cpu_capability, cpu_name  # noqa: E402

PAPER = ("sudoku-extreme-1k", "maze-hard-1k", "arc-agi-1", "arc-agi-2", "sudoku-extreme-csv")
MiB = 1 << 20


@dataclass
class Build:
    config: str
    scale: float
    workers: int | None
    seconds: float
    rows: dict
    bytes_on_disk: int
    driver_peak_mib: float
    worker_peak_mib: float  # the largest peak of one Ray worker process
    workers_seen: int  # Ray worker processes seen during the build
    total_peak_mib: float  # the peak of the whole tree's summed RSS at one moment (shared pages counted in each)
    rows_per_s_per_worker: float
    returncode: int

    def line(self) -> str:
        rows = self.rows.get("train", 0) + self.rows.get("test", 0)
        name = config_file(self.config).stem.removeprefix("data-")
        return (f"| {name} ×{self.scale:g} | {self.workers or 'all'} | {rows:,} | {self.seconds:,.1f} s | "
                f"{self.bytes_on_disk / 1e6:,.1f} MB | {self.driver_peak_mib:,.0f} MiB | "
                f"{self.worker_peak_mib:,.0f} MiB ({self.workers_seen}) | {self.total_peak_mib:,.0f} MiB | "
                f"{self.rows_per_s_per_worker:,.0f} |")


HEADER = ("| build | workers | rows | wall | on disk | driver peak | worst Ray worker peak (processes) | all processes "
          "peak | rows/s per worker |\n|---|---|---|---|---|---|---|---|---|")


def config_file(config: str, kind: str = "data") -> Path:
    """A paper config's name (``arc-agi-1``: pipeline/configs/<kind>-arc-agi-1.yaml, ``kind`` data or train) or a
    YAML file's path."""
    return Path(config) if config.endswith((".yaml", ".yml")) else CONFIGS / f"{kind}-{config}.yaml"


def scaled(config: str, scale: float) -> dict:
    """The config's YAML with its row count multiplied by ``scale``."""
    cfg = yaml.safe_load(config_file(config).read_text())
    if scale != 1:
        section = cfg[cfg["task"]]
        if cfg["task"] == "sudoku":
            section["augmentations"] = max(1, round(section.get("augmentations", 1000) * scale))
        elif cfg["task"] == "maze":
            for key in ("train_count", "test_count"):
                section[key] = max(1, round(section[key] * scale))
        else:
            section["variants"] = max(1, round(section.get("variants", 1000) * scale))
    return cfg


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build(config: str, scale: float, workers: int | None, out_root: Path, log_dir: Path, keep: bool = False) -> Build:
    """One ``hrm data build`` of ``config`` at ``scale``, measured; its output removed afterwards unless ``keep``."""
    cfg = scaled(config, scale)
    tag = f"{config_file(config).stem.removeprefix('data-')}-x{scale:g}-w{workers or 'all'}"
    path, out = out_root / f"{tag}.yaml", out_root / tag
    if cfg["task"] == "sudoku" and cfg["sudoku"].get("source") == "csv":  # files of the published size, generated
        train, test = official_csvs(out_root / f"csv-x{scale:g}", scale)  # (written once, outside the timed build)
        cfg["sudoku"].update(csv_train=str(train), csv_test=str(test))
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [str(Path(sys.executable).with_name("hrm")), "data", "build", cfg["task"], "--config", str(path),
           "--out", str(out)] + (["--workers", str(workers)] if workers else [])
    log_path = log_dir / f"{tag}.log"
    started = time.monotonic()
    code, sampler = run_sampled(cmd, log_path, out_root)
    seconds = time.monotonic() - started
    rows, size = {}, 0
    if code == 0:
        rows = json.loads((out / "metadata.json").read_text())["counts"]
        size = folder_bytes(out)
    else:
        print(f"{tag}: hrm data build exited with {code}; its output: {log_path}", file=sys.stderr)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    used = workers or psutil.cpu_count()
    return Build(config=config, scale=scale, workers=workers, seconds=seconds, rows=rows, bytes_on_disk=size,
                 driver_peak_mib=sampler.driver / MiB,
                 worker_peak_mib=max(sampler.workers.values(), default=0) / MiB, workers_seen=len(sampler.workers),
                 total_peak_mib=sampler.total / MiB,
                 rows_per_s_per_worker=sum(rows.values()) / seconds / used if rows else 0.0, returncode=code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["builds", "memory", "workers", "hosts", "ingest", "steps"])
    ap.add_argument("--only", nargs="+", default=None,
                    help=f"paper configs ({', '.join(PAPER)}; default: all) or data config files")
    ap.add_argument("--scale", type=float, default=1.0, help="rows × this (builds, workers)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 4.0], help="memory: the scales compared")
    ap.add_argument("--workers", type=int, nargs="+", default=None,
                    help="Ray Data tasks (builds, memory: the first; workers: each, default 1 2)")
    ap.add_argument("--out", type=Path, default=None, help="where builds go (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON object a build here")
    ap.add_argument("--keep", action="store_true", help="keep each build's dataset under --out")
    ap.add_argument("--train", nargs="+", default=None,
                    help="ingest, steps: paper training configs (sudoku-extreme-1k: pipeline/configs/train-sudoku-"
                         "extreme-1k.yaml) or YAML files, one per --data")
    ap.add_argument("--data", type=Path, nargs="+", default=None, help="ingest, steps: a built dataset per --train")
    ap.add_argument("--seconds", type=float, default=5.0, help="ingest: seconds of batch assembly timed")
    ap.add_argument("--batch", type=int, default=2, help="steps: the global batch")
    ap.add_argument("--steps", type=int, default=4, help="steps: training steps a run (at least 3)")
    args = ap.parse_args(argv)
    if args.what in ("ingest", "steps"):
        return (ingest if args.what == "ingest" else steps)(ap, args)
    if args.what == "hosts":  # table 2 on two Ray hosts: bench/two_hosts.py, in its own process
        return subprocess.call([sys.executable, str(Path(__file__).with_name("two_hosts.py")), "--config",
                                (args.only or ["sudoku-extreme-1k"])[0], "--scale", str(args.scale)]
                               + (["--json", str(args.json)] if args.json else []))
    configs = args.only or (list(PAPER) if args.what == "builds" else ["sudoku-extreme-1k"])
    missing = [c for c in configs if not config_file(c).is_file()]
    if missing:
        ap.error(f"no data config {', '.join(str(config_file(c)) for c in missing)} (a paper config: "
                 f"{', '.join(PAPER)}, or a YAML file)")
    out_root = args.out or Path(tempfile.mkdtemp(prefix="hrm-scale-"))
    out_root.mkdir(parents=True, exist_ok=True)
    if args.what == "builds":
        plan = [(c, args.scale, (args.workers or [None])[0]) for c in configs]
    elif args.what == "memory":
        plan = [(c, s, (args.workers or [None])[0]) for c in configs for s in args.scales]
    else:
        plan = [(c, args.scale, w) for c in configs for w in (args.workers or [1, 2])]
    print(f"{len(plan)} build(s) on {cpu_name()} ({cpu_capability()}, {psutil.cpu_count()} CPUs); logs and builds "
          f"under {out_root}\n{HEADER}", flush=True)
    failed = 0
    for config, scale, workers in plan:
        result = build(config, scale, workers, out_root, out_root, keep=args.keep)
        failed += result.returncode != 0
        print(result.line(), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({**asdict(result), "cpu": cpu_name(), "cpu_capability": cpu_capability(),
                                    "cores": psutil.cpu_count()}) + "\n")
    return 1 if failed else 0


def train_configs(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path]:
    """The training config file of each --train, each with a built --data (argparse errors otherwise)."""
    if not args.train or not args.data or len(args.train) != len(args.data):
        ap.error(f"{args.what} needs --train and --data, one dataset per training config")
    missing = [str(config_file(t, "train")) for t in args.train if not config_file(t, "train").is_file()]
    missing += [f"{d} (no metadata.json: build it first)" for d in args.data if not (d / "metadata.json").is_file()]
    if missing:
        ap.error(f"not found: {', '.join(missing)}")
    return [config_file(t, "train") for t in args.train]


def steps(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Table 4: bench/paper_steps.py for each (training config, built dataset), at each worker count; the losses
    of each config compared across worker counts."""
    from bench.paper_steps import HEADER, measure

    files = train_configs(ap, args)
    if args.steps < 3:
        ap.error("--steps must be at least 3 (the first step is not timed)")
    workers = args.workers or [1, 2]
    work = args.out or Path(tempfile.mkdtemp(prefix="hrm-steps-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"paper steps on {cpu_name()} ({cpu_capability()}, {psutil.cpu_count()} CPUs), float32, global batch "
          f"{args.batch}; logs under {work}\n{HEADER}", flush=True)
    failed = 0
    for file, data in zip(files, args.data):
        rows = [measure(file, data.resolve(), w, args.batch, args.steps, work) for w in workers]
        for row in rows:
            failed += row.returncode != 0
            print(row.line(), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({**asdict(row), "cpu": cpu_name(), "cpu_capability": cpu_capability()}) + "\n")
        losses = [r.losses for r in rows if r.returncode == 0]
        if len(losses) > 1:
            worst = max(abs(a - b) / abs(a) for other in losses[1:] for a, b in zip(losses[0], other))
            print(f"  {file.stem}: losses at {workers} workers differ by at most {worst:.2e} (relative)", flush=True)
    return 1 if failed else 0


def ingest(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Table 3: bench/headroom.py for each (training config, built dataset), at each worker count."""
    from bench.headroom import GOAL, HEADER
    from bench.headroom import measure as headroom
    from pipeline.core.ray_start import init_ray
    from pipeline.train.config import load_train_config

    configs = [load_train_config(f, {"data": str(d)}) for f, d in zip(train_configs(ap, args), args.data)]
    init_ray()
    workers = args.workers or [1, 8, 64]
    print(f"ingest on {cpu_name()} ({cpu_capability()}, {psutil.cpu_count()} CPUs)\n{HEADER}", flush=True)
    short = 0
    for cfg, data in zip(configs, args.data):
        for w in workers:
            row = headroom(str(data), cfg.global_batch_size, cfg.shards, w, seconds=args.seconds)
            short += row.ratio < GOAL
            print(row.line(), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({**asdict(row), "train": cfg.name, "data": str(data), "cpu": cpu_name(),
                                        "cpu_capability": cpu_capability()}) + "\n")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
