"""``hrm serve``'s server: what ``mlflow models serve`` does, with ``pipeline.serving.guard`` in front of MLflow's
scoring server. The model is a local folder (``hrm serve`` downloads it and checks its files first); the guard's
file is copied into a temporary folder of its own, and uvicorn serves ``hrm_guard:make_app`` from there — in this
environment (``local``) or in a virtualenv MLflow builds from the model's pinned requirements (``virtualenv``:
MLflow's own environment manager, as ``mlflow models serve --env-manager virtualenv`` uses it). Ends as uvicorn
ends; the temporary folder goes with it.

Run by ``hrm serve`` under its supervisor (``pipeline.serving.supervise``):
``python -m pipeline.serving.server MODEL_DIR HOST PORT WORKERS ENV_MANAGER``."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

GUARD = Path(__file__).with_name("guard.py")
GUARD_MODULE = "hrm_guard"  # the guard's name beside the model: nothing of this project is importable there
TIMEOUT_ENV, DEFAULT_TIMEOUT = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "60"  # MLflow's, as its server sets it

logger = logging.getLogger(__name__)


def uvicorn_command(app_dir: Path, host: str, port: int, workers: int) -> str:
    """The shell command that serves the guarded app from ``app_dir``."""
    return (f"exec uvicorn --app-dir {shlex.quote(str(app_dir))} --host {shlex.quote(host)} --port {port} "
            f"--workers {workers} --factory {GUARD_MODULE}:make_app")


def no_bytecode_at_install() -> None:
    """pip, as MLflow runs it to build the model's environment, installs without compiling every module to bytecode
    where Python writes the bytecode of what it imports itself (``PYTHONDONTWRITEBYTECODE`` unset): the server's first
    start compiles what it imports, once. The model's requirements (torch, MLflow and ~100 more packages, 2 GB)
    installed in 32 s instead of 68 s so on a 2-core Xeon (AVX-512; the saving is bytecode compiling, single-core, so
    slower CPUs save more). Where Python writes no bytecode, pip compiles as usual (else every start would compile
    torch and MLflow again: +3 s a start here). A user's ``PIP_COMPILE`` or ``PIP_NO_COMPILE`` decides instead (pip
    reads ``PIP_NO_COMPILE=1`` as ``compile = true``)."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE") or {"PIP_COMPILE", "PIP_NO_COMPILE"} & set(os.environ):
        return
    os.environ["PIP_COMPILE"] = "false"


def serve(model_dir: str, host: str, port: int, workers: int, env_manager: str) -> int:
    """Serve the model in ``model_dir`` until uvicorn ends, and return uvicorn's exit status; when the group's
    SIGTERM / SIGINT / SIGHUP ended it, end by that signal instead (as ``mlflow models serve`` would)."""
    from mlflow.pyfunc import scoring_server

    received: list[int] = []
    local = str(Path(model_dir).resolve())
    folder = Path(tempfile.mkdtemp(prefix="hrm-guard-"))
    try:
        shutil.copyfile(GUARD, folder / f"{GUARD_MODULE}.py")
        env = {**os.environ, scoring_server._SERVER_MODEL_PATH: str(local),
               TIMEOUT_ENV: os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT}
        command = uvicorn_command(folder, host, port, workers)
        if env_manager == "local":
            server = subprocess.Popen(["bash", "-c", command], env=env)
        else:
            from mlflow.pyfunc.backend import PyFuncBackend

            no_bytecode_at_install()
            environment = PyFuncBackend({}, env_manager=env_manager, workers=workers).prepare_env(local)
            server = environment.execute(command, env, synchronous=False)
        # The supervisor signals the whole group, uvicorn included: wait for it to end, then clean up.
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            signal.signal(getattr(signal, name), lambda signum, _: received.append(signum))
        code = server.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if received:
        signal.signal(received[0], signal.SIG_DFL)
        os.kill(os.getpid(), received[0])
    return code


def main(argv: list[str]) -> int:
    model_dir, host, port, workers, env_manager = argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    code = serve(model_dir, host, int(port), int(workers), env_manager)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
