"""The ``hrm`` command."""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, sweep, track and ship Hierarchical Reasoning Models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@main.command()
@click.option("--flavour", default="debug", show_default=True, help="Model flavour (hrm.config.FLAVOURS).")
def info(flavour: str) -> None:
    """Print a model flavour's config and size, and this machine as a bug report needs it."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from hrm.config import model_config, to_dict
    from hrm.model import HRM
    from pipeline.precision import cpu_capability, cpu_name, resolve_dtype

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    cfg = model_config(flavour)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype, reason = resolve_dtype(cfg.forward_dtype, device)
    lines: dict[str, object] = {**to_dict(cfg), "parameters": f"{HRM(cfg).num_parameters():,}", "device": device}
    if device == "cuda":
        lines["gpu"] = torch.cuda.get_device_name()
    lines.update({"cpu": cpu_name(), "cpu capability": cpu_capability(), "resolved forward_dtype": dtype,
                  "forward_dtype reason": reason, "torch threads": torch.get_num_threads(),
                  "cpu count": os.cpu_count(), "platform": platform.platform(),
                  "python": platform.python_version(), "torch": torch.__version__,
                  "ray": package("ray"), "mlflow": package("mlflow")})
    for key, value in lines.items():
        click.echo(f"{key:24} {value}")


def _register() -> None:
    from pipeline.cli_data import data
    from pipeline.cli_train import evaluate, serve, solve, train
    from pipeline.cli_tune import tune
    from pipeline.demo import demo

    for command in (demo, data, train, evaluate, solve, serve, tune):
        main.add_command(command)


_register()
