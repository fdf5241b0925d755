"""The ``hrm`` command: the group, ``hrm info``, and the verb groups registered from their modules
(``data``, ``train``, ``tune``, ``use``: eval/solve/serve, ``demo``, ``bench``). The top layer: may import any
other."""

from __future__ import annotations

import logging
import os
import traceback

import click

from pipeline.cli.errors import USER_ERRORS, one_line, store_problem


class Main(click.Group):
    """The ``hrm`` group: user errors as one-line messages (:data:`USER_ERRORS`, and an object store's failures:
    ``store_problem``), tracebacks with ``--debug``."""

    def invoke(self, ctx: click.Context):
        debug = bool(ctx.params.get("debug")) or os.environ.get("HRM_DEBUG", "") not in ("", "0")
        previous = os.environ.get("HRM_DEBUG")
        if debug:
            os.environ["HRM_DEBUG"] = "1"  # the jobs' output keeps Ray's tracebacks too (pipeline.core.progress)
        try:
            return self._invoke(ctx, debug)
        finally:
            if previous is None:
                os.environ.pop("HRM_DEBUG", None)
            else:
                os.environ["HRM_DEBUG"] = previous

    def _invoke(self, ctx: click.Context, debug: bool):
        try:
            return super().invoke(ctx)
        except click.ClickException as err:
            cause = err.__cause__ or err.__context__  # what a command turned into its message
            if debug and cause is not None:
                traceback.print_exception(cause)
            raise
        except USER_ERRORS as err:
            if debug:
                raise
            raise click.ClickException(f"{one_line(err)} (hrm --debug shows where)") from err
        except Exception as err:
            problem = store_problem(err)
            if problem is None or debug:
                raise
            raise click.ClickException(f"{problem} (hrm --debug shows where)") from err


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error (for a bug report); also "
                                            "HRM_DEBUG=1.")
def main(verbose: bool, debug: bool) -> None:
    """Train, sweep, track and ship Hierarchical Reasoning Models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@main.command()
@click.option("--flavour", default="debug", show_default=True, help="Model flavour (hrm.config.FLAVOURS).")
def info(flavour: str) -> None:
    """Print a model flavour's config and size, and this machine as a bug report needs it."""
    import torch

    from hrm.config import model_config
    from hrm.model import HRM
    from pipeline.core.config_io import to_dict
    from pipeline.core.precision import resolve_dtype

    cfg = model_config(flavour)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype, reason = resolve_dtype(cfg.forward_dtype, device)
    lines: dict[str, object] = {**to_dict(cfg), "parameters": f"{HRM(cfg).num_parameters():,}", "device": device}
    if device == "cuda":
        lines["gpu"] = torch.cuda.get_device_name()
    lines.update(_machine(dtype, reason))
    for key, value in lines.items():
        click.echo(f"{key:24} {value}")


def _machine(dtype: str, reason: str) -> dict[str, object]:
    """What a bug report needs about this machine and its packages, after the device lines."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from pipeline.core.precision import cpu_capability, cpu_name
    from pipeline.tracking.version import code_version, code_version_string

    ours = code_version()

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"cpu": cpu_name(), "cpu capability": cpu_capability(), "resolved forward_dtype": dtype,
            "forward_dtype reason": reason, "torch threads": torch.get_num_threads(),
            "cpu count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "ray": package("ray"), "mlflow": package("mlflow"), "hrm-pipeline": code_version_string(ours),
            "source sha256": ours["source_sha256"]}


def _register() -> None:
    """Add each verb group's commands to ``main`` (imported here, so the modules keep their names)."""
    from pipeline.cli.bench import bench
    from pipeline.cli.data import data
    from pipeline.cli.demo import demo
    from pipeline.cli.plan import plan
    from pipeline.cli.train import train
    from pipeline.cli.tune import tune
    from pipeline.cli.use import evaluate, serve, solve

    for command in (demo, data, plan, train, evaluate, solve, serve, tune, bench):
        main.add_command(command)


_register()
