"""``hrm plan``: what a training run will need before it runs, in seconds — its dataset, steps and epochs, model,
FLOPs, memory per worker and time (a probe step on this machine; GPUs from measured rates, gpu_figures.py) — and
what this machine or cluster lacks for it. Nothing is started on a cluster and nothing is written."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.train.config import TrainConfig, resolve_data, run_model_config
from pipeline.train.gpu_figures import GPU_FIGURES, GPU_MEMORY_GB, GpuFigure

log = logging.getLogger(__name__)

SHARE_ROW_BYTES = 4 + 8  # a share row besides its tokens: the puzzle id (int32) and, while read, its example id
SMALL_STEP = 0.25  # a step with less than this share of a measured step's FLOPs gets a lower bound
# Autograd's saved tensors are not the whole peak of a step: the backward's gradient buffers come on top. The peak
# resident memory of three float32 steps on CPU (tests/pipeline/train/test_plan.py; 2-core Xeon, torch 2.13) was
# 1.11-2.50x of state + saved activations (paper at batch 8: 1.11, trm 1.28, small 1.69-1.80, debug 2.18-2.50: the
# shallower the model, the more), and 0.71-1.26x with the activations counted twice, as the plan does.
ACTIVATION_PEAK = 2.0
# A worker's peak while it reads its share, over what it then holds: the share, and Ray Data's blocks in flight
# (bench/scale.py steps, ARC-AGI-1 on one worker: 11.0 GB at the peak, for 6.3 GB of share + 3.6 GB of model state
# and activations + the process). pipeline.train.share.collect_share fills the share in place since: it was 3x, and
# that worker was killed for memory past 18 GB.
READ_PEAK = 1.2
WORKER_PROCESS = 0.6e9  # a Train worker's own memory: Python, torch, Ray, MLflow (≈ 580 MiB measured, table 4)


@dataclass
class Probe:
    """Training steps timed on this machine's CPU at ``batch`` rows (the second step: the first allocates)."""

    batch: int
    dtype: str
    seconds: float  # one step at ``batch``
    threads: int


@dataclass
class GpuEstimate:
    gpu: str
    step_seconds: float | None  # one step of the run's local batch on one GPU; None: no measured rate
    hours: float | None  # the whole run, its workers in parallel (assumes linear data-parallel scaling)
    fits: bool  # the worker's model state and activations fit the GPU's memory
    basis: str


@dataclass
class Plan:
    name: str
    data: str
    task: str
    rows: dict[str, int]
    data_bytes: int
    parts: int
    seq_len: int
    workers: int  # the fewest (scaling.min_workers): the largest share and local batch a worker takes
    global_batch: int
    local_batch: int
    steps_per_epoch: int
    steps: int
    variant: str
    params: int
    state_bytes: int  # float32 weights, gradients, Adam's two moments (and an EMA copy) on each worker
    activation_bytes: int  # what autograd keeps for the backward of one step at the local batch and dtype
    share_bytes: int  # the worker's share of the training split, held in RAM for the whole run
    dtype: str
    dtype_reason: str
    device: str  # cuda or cpu: where the run trains
    flops_per_step: float  # model FLOPs of one step at the global batch
    probe: Probe | None = None
    gpus: list[GpuEstimate] = field(default_factory=list)
    have: dict[str, float] = field(default_factory=dict)  # what the machine or cluster has: CPU, GPU, memory
    lacks: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch

    @property
    def device_bytes(self) -> int:
        """Memory a worker's device needs at the peak of a step: the training state, and the saved activations
        with the backward's buffers (``ACTIVATION_PEAK``)."""
        return self.state_bytes + int(ACTIVATION_PEAK * self.activation_bytes)

    @property
    def cpu_step_seconds(self) -> float | None:
        """One step of the whole global batch on this machine, scaled from the probe by rows (its FLOPs)."""
        return None if self.probe is None else self.probe.seconds * self.global_batch / self.probe.batch

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "epochs": self.epochs, "device_bytes": self.device_bytes,
                "cpu_step_seconds": self.cpu_step_seconds}


def make_plan(cfg: TrainConfig, *, probe: bool = True, have: dict[str, float] | None = None) -> Plan:
    """The plan of ``cfg`` on its dataset (a missing dataset: FileNotFoundError naming it); ``probe`` times a
    training step on this machine; ``have`` is what the machine or cluster offers (default: :func:`this_machine`)."""
    from hrm.flops import step_flops
    from pipeline.data.loader import read_metadata
    from pipeline.train.batches import batches_per_epoch, require_one_global_batch

    data_path = resolve_data(cfg)
    meta = read_metadata(data_path)
    rows = int(meta.counts["train"])
    require_one_global_batch(rows, cfg.global_batch_size, data_path)
    s = cfg.scaling
    device = "cuda" if s.use_gpu else "cpu"
    configured = run_model_config(cfg, meta)
    dtype, reason = planned_dtype(configured.forward_dtype, device)
    model = dataclasses.replace(configured, forward_dtype=dtype)
    params, state = training_state_size(model, ema=cfg.ema is not None)
    per_epoch = batches_per_epoch(rows, cfg.global_batch_size)
    steps = int(min(cfg.max_steps or math.inf, cfg.epochs * per_epoch))
    local = cfg.local_batch_size
    files = meta.files or {}
    plan = Plan(name=cfg.name, data=data_path, task=meta.task, rows={k: int(v) for k, v in meta.counts.items()},
                data_bytes=int(sum(p.get("bytes", 0) for split in files.values() for p in split)),
                parts=sum(len(split) for split in files.values()), seq_len=meta.seq_len,
                workers=s.min_workers, global_batch=cfg.global_batch_size, local_batch=local,
                steps_per_epoch=per_epoch, steps=steps, variant=model.variant, params=params, state_bytes=state,
                activation_bytes=activation_bytes(model, local),
                share_bytes=share_bytes(rows, meta.seq_len, s.min_workers),
                dtype=dtype, dtype_reason=reason, device=device,
                flops_per_step=step_flops(model, cfg.global_batch_size))
    if probe:
        plan.probe = probe_step(cfg, configured)
    plan.gpus = [gpu_estimate(plan, model, gpu) for gpu in GPU_MEMORY_GB]
    plan.have = this_machine() if have is None else have
    plan.lacks = lacks(plan, cfg)
    return plan


def training_state_size(model_cfg, *, ema: bool) -> tuple[int, int]:
    """(parameters, bytes a worker holds for them in training): float32 weights, gradients and Adam's two moments
    of the network, plus an EMA copy; of the puzzle-embedding table (ARC's: most of the parameters) the weights and
    their EMA copy only (SignSGD updates the rows a batch used, from gradients of those rows). Activations come on
    top. Counted on the meta device: nothing is allocated."""
    import torch

    from hrm.model import HRM

    with torch.device("meta"):
        model = HRM(model_cfg)
    params = model.num_parameters()
    table = model.puzzle_emb.weight.numel() if model.puzzle_emb is not None else 0
    return params, (params - table) * 4 * (4 + int(ema)) + table * 4 * (1 + int(ema))


def share_bytes(rows: int, seq_len: int, workers: int) -> int:
    """Bytes a worker holds for its share of ``rows`` training rows of ``seq_len`` tokens (the largest share)."""
    return math.ceil(rows / workers) * (2 * seq_len + SHARE_ROW_BYTES)


def worker_ram(share: int, model: int = 0) -> float:
    """A Train worker's peak RAM: its process, its share of ``share`` bytes while read, and ``model`` bytes of
    training state and activations when it trains on the CPU."""
    return WORKER_PROCESS + READ_PEAK * share + model


def cluster_memory(resources: dict[str, float]) -> float:
    """The memory of a Ray cluster's ``ray.cluster_resources()``: tasks' memory and the object store's."""
    return resources.get("memory", 0) + resources.get("object_store_memory", 0)


def share_problem(rows: int, seq_len: int, workers: int, memory: float, where: str) -> str | None:
    """One line saying so when a worker reading its share of ``rows`` would not fit its part of ``memory`` (the
    cluster's, in bytes; 0: unknown), else None."""
    share = share_bytes(rows, seq_len, workers)
    need, have = worker_ram(share), memory / workers
    if not memory or need <= have:
        return None
    return (f"{where}: a worker's share of its {rows:,} training rows is {size(share)} at {workers} worker(s) "
            f"({size(need)} with the worker while it reads them), more than the {size(have)} of memory each worker "
            f"has here; use more workers (scaling.num_workers) or nodes with more memory")


def planned_dtype(requested: str, device: str) -> tuple[str, str]:
    """The forward dtype the run will compute in: on this machine's CPU as ``hrm train`` resolves it; on a GPU
    (none here, usually) bfloat16 for ``auto``, as on the H100/H200 the plan is for."""
    if device == "cuda" and requested == "auto":
        import torch

        if not torch.cuda.is_available():
            return "bfloat16", "auto: bfloat16 on the GPUs planned for (H100/H200 compute in bfloat16 natively)"
    from pipeline.core.precision import resolve_dtype

    return resolve_dtype(requested, device)


def activation_bytes(model_cfg, batch: int) -> int:
    """Bytes autograd keeps for the backward of one training step (forward and deep-supervision loss) at ``batch``
    rows: the storages of the tensors it saves, each once, counted on the meta device (the model runs on tensors
    without data, nothing is allocated). With the one-step gradient only the last L and H updates of a segment
    keep theirs."""
    import torch

    from hrm.loss import act_loss
    from hrm.model import HRM

    saved: dict[int, int] = {}  # storage -> bytes: views of one tensor (q, k, v of one projection) count once

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage._cdata] = storage.nbytes()  # _cdata: the storage's identity (meta tensors have no address)
        return t

    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _fused_attention().apply
    try:
        with torch.device("meta"):
            model = HRM(model_cfg)
            batch_ = synthetic_batch(model_cfg, batch)
            carry = model.initial_carry(batch_)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                carry, outputs = model(carry, batch_)
                act_loss(outputs, carry.batch["labels"], carry.halted, carry.steps, loss=model_cfg.loss)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real_sdpa
    return sum(saved.values())


def _fused_attention():
    """What a fused attention kernel (flash attention on GPUs, its CPU kernel here) keeps for the backward: q, k, v,
    the output and the log-sum-exp of the scores, never the (L × L) score matrices. On the meta device SDPA takes
    its plain path, which keeps them (the Maze model's activations would be counted 4× over)."""
    import torch

    class FusedAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, is_causal=False):  # (B, H, L, d)
            out = torch.empty_like(q)
            ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
            return out

        @staticmethod
        def backward(ctx, grad):
            q, k, v, _, _ = ctx.saved_tensors
            return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), None

    return FusedAttention


def synthetic_batch(model_cfg, batch: int) -> dict[str, Any]:
    """``batch`` rows of random tokens in the model's vocabulary (on the current default device)."""
    import torch

    L = model_cfg.seq_len
    return {"inputs": torch.randint(1, model_cfg.vocab_size, (batch, L)),
            "labels": torch.randint(1, model_cfg.vocab_size, (batch, L)),
            "puzzle_ids": torch.zeros(batch, dtype=torch.int32)}


def probe_step(cfg: TrainConfig, model_cfg, batch: int = 2) -> Probe:
    """Two training steps of the run's model (``model_cfg``, its forward_dtype as configured) on this machine's CPU
    at ``batch`` rows (at most the local batch), in the dtype ``hrm train`` would choose here; the second is
    timed."""
    import torch

    from hrm.model import HRM
    from hrm.step import build_optimizers, train_step
    from pipeline.core.precision import resolve_dtype

    batch = max(1, min(batch, cfg.local_batch_size))
    dtype, _ = resolve_dtype(model_cfg.forward_dtype, "cpu")
    mcfg = dataclasses.replace(model_cfg, forward_dtype=dtype)
    torch.manual_seed(cfg.seed)
    model = HRM(mcfg)
    opt = build_optimizers(model, cfg.optim)
    rows = synthetic_batch(mcfg, batch)
    carry = model.initial_carry(rows)
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        carry, _, _ = train_step(model, carry, rows, opt, loss_scale=1 / batch, loss=mcfg.loss)
        seconds = time.perf_counter() - started
    return Probe(batch=batch, dtype=dtype, seconds=seconds, threads=torch.get_num_threads())


def achieved_flops(figure: GpuFigure) -> float:
    """Model FLOP/s of a measured figure: its step's FLOPs × steps/s."""
    from hrm.config import model_config
    from hrm.flops import step_flops

    model = model_config(figure.flavour, seq_len=figure.seq_len, vocab_size=figure.vocab_size)
    return step_flops(model, figure.batch) * figure.examples_per_s / figure.batch


def gpu_estimate(plan: Plan, model_cfg, gpu: str) -> GpuEstimate:
    """The run on ``gpu``s, one per worker: the measured figure of the same architecture (HRM, TRM with attention,
    TRM-MLP) nearest in sequence length, scaled by model FLOPs to the run's local batch."""
    from hrm.config import model_config
    from hrm.flops import step_flops

    fits = plan.device_bytes <= GPU_MEMORY_GB[gpu] * 1e9

    def same_kind(f: GpuFigure) -> bool:
        c = model_config(f.flavour)
        return (c.variant, c.mlp_t) == (model_cfg.variant, model_cfg.mlp_t)

    figures = sorted((f for f in GPU_FIGURES if f.gpu == gpu and same_kind(f)),
                     key=lambda f: abs(f.seq_len - plan.seq_len))
    if not figures:
        return GpuEstimate(gpu, None, None, fits, f"no measured {gpu} rate (a figure with its source belongs in "
                                                  "pipeline/train/gpu_figures.py)")
    f = figures[0]
    rate = achieved_flops(f)
    flops = step_flops(model_cfg, plan.local_batch)
    step = flops / rate
    basis = (f"{f.examples_per_s:,.0f} examples/s of {f.flavour} on {f.task}, batch {f.batch}, {f.seq_len} tokens: "
             f"{rate / 1e12:.0f} TFLOP/s of model FLOPs")
    measured = rate * f.batch / f.examples_per_s  # the measured step's FLOPs
    if flops < SMALL_STEP * measured:
        basis += (f"; a lower bound: this step has {flops / measured:.1%} of the measured step's FLOPs, and a GPU "
                  "runs small steps far below its rate")
    return GpuEstimate(gpu, step, step * plan.steps / 3600, fits, basis)


def this_machine() -> dict[str, float]:
    """What this machine offers a run started here (or the cluster ``RAY_ADDRESS`` names, when set): CPUs, GPUs
    and memory in bytes."""
    if os.environ.get("RAY_ADDRESS"):
        import ray

        from pipeline.core.ray_start import init_ray

        init_ray()
        total = ray.cluster_resources()
        return {"CPU": total.get("CPU", 0), "GPU": total.get("GPU", 0), "memory": cluster_memory(total)}
    import psutil
    import torch

    return {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count(), "memory": psutil.virtual_memory().total}


def lacks(plan: Plan, cfg: TrainConfig) -> list[str]:
    """What the machine or cluster (``plan.have``) lacks for the run, one line each: GPUs, CPUs, memory."""
    s, have, out, n = cfg.scaling, plan.have, [], cfg.scaling.min_workers  # an elastic run starts on min
    if s.use_gpu and n * s.gpus_per_worker > have.get("GPU", 0):
        out.append(f"GPUs: {n} workers × {s.gpus_per_worker} GPU need {n * s.gpus_per_worker:g}"
                   f"; here: {have.get('GPU', 0):g}")
    need_cpu = n * s.cpus_per_worker + 1  # Ray Data's read tasks take a whole CPU
    if need_cpu > have.get("CPU", 0):
        out.append(f"CPUs: {n} workers × {s.cpus_per_worker:g} CPU and 1 for Ray Data need {need_cpu:g}; "
                   f"here: {have.get('CPU', 0):g}")
    host = worker_ram(plan.share_bytes, 0 if s.use_gpu else plan.device_bytes)
    memory = have.get("memory", 0)
    if memory and host * n > memory:
        out.append(f"memory: {n} worker(s) × {size(host)} (the process, its share read"
                   f"{'' if s.use_gpu else ', model state and activations'}) need {size(host * n)}; "
                   f"here: {size(memory)}")
    return out


def size(n: float) -> str:
    """Bytes for people: 3 significant digits, decimal units (``6.58 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def render(plan: Plan) -> list[str]:
    """The plan as the lines ``hrm plan`` prints."""
    p = plan
    lines = [
        f"run         {p.name}: {p.variant.upper()} on {p.task}",
        f"dataset     {p.data}: {p.rows['train']:,} train / {p.rows.get('test', 0):,} test rows of {p.seq_len} "
        f"tokens, {size(p.data_bytes)} in {p.parts} parts",
        f"steps       {p.steps:,} at global batch {p.global_batch} ({p.steps_per_epoch:,} an epoch: {p.epochs:.3g} "
        f"epochs); {p.workers} worker(s) × local batch {p.local_batch}",
        f"model       {p.params:,} parameters; {p.flops_per_step / 1e12:.3g} TFLOP a step (model FLOPs, "
        f"{p.flops_per_step * p.steps / 1e18:.3g} EFLOP in all)",
        f"memory      per worker on {p.device}: {size(p.state_bytes)} weights, gradients and optimizer state + "
        f"{size(p.activation_bytes)} activations saved at batch {p.local_batch} in {p.dtype}, ×{ACTIVATION_PEAK:g} "
        f"with the backward's buffers = {size(p.device_bytes)} at the peak of a step; in RAM also its "
        f"{size(p.share_bytes)} share of the data ({READ_PEAK:g}× while read) and ≈ {size(WORKER_PROCESS)} for the "
        "process",
        f"dtype       {p.dtype} ({p.dtype_reason})",
    ]
    if p.probe is not None:
        total = p.cpu_step_seconds * p.steps
        lines.append(f"this CPU    {p.probe.seconds:.3g} s a step at batch {p.probe.batch} ({p.probe.dtype}, "
                     f"{p.probe.threads} threads): ≈ {duration(p.cpu_step_seconds)} a step of {p.global_batch} "
                     f"rows, ≈ {duration(total)} for the run on this machine alone")
    for g in p.gpus:
        fit = "" if g.fits else f"; does NOT fit its {GPU_MEMORY_GB[g.gpu]:g} GB"
        if g.step_seconds is None:
            lines.append(f"{g.gpu:11} not measured: {g.basis}{fit}")
        else:
            lines.append(f"{g.gpu:11} ≈ {duration(g.step_seconds)} a step, ≈ {duration(g.hours * 3600)} for the "
                         f"run on {p.workers} GPU(s){fit} (from {g.basis})")
    sources = sorted({f.source for f in GPU_FIGURES})
    lines += [f"GPU rates   {source}" for source in sources]
    have = p.have
    lines.append(f"here        {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs, "
                 f"{size(have.get('memory', 0))} memory")
    lines += [f"lacks       {line}" for line in p.lacks] or ["lacks       nothing: the run fits here"]
    return lines
