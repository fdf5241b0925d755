"""Errors as the user sees them: one line naming what is wrong, the traceback only with ``--debug``."""

from __future__ import annotations

# What a user got wrong (a file, a flag, a config value, a damaged dataset) and no command turned into a message:
# one line naming it and exit status 1, as for the commands' own messages; the traceback only with --debug.
# FileExistsError: also an output another job holds (pipeline.core.locks).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError, ConnectionError)

# An object store that failed: unreachable, stalled, or refusing the credentials. pyarrow says "AWS Error <CODE>",
# botocore raises its own classes; both may come wrapped in a Ray task's error.
STORE_CLASSES = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "NoCredentialsError",
                 "ClientError", "PartialCredentialsError")


def _chain(err: BaseException):
    """``err``, then the cause of a Ray task's error and the exceptions it was raised from, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__context__, e.__cause__, getattr(e, "cause", None)]


def store_problem(err: BaseException) -> str | None:
    """One line for an object store's failure anywhere in ``err``'s chain, else None."""
    for e in _chain(err):
        text = str(e)
        if "AWS Error" in text:
            line = next(line for line in text.splitlines() if "AWS Error" in line).strip()
            return f"the object store failed: {line[line.find('AWS Error'):][:300]}"
        if type(e).__name__ in STORE_CLASSES and type(e).__module__.startswith("botocore"):
            return f"the object store failed: {text.splitlines()[0][:300] if text else type(e).__name__}"
    return None


def one_line(err: BaseException) -> str:
    """What to tell the user of ``err``: an object store's failure as ``store_problem`` says it, a Ray task's error
    as its cause says it (not the remote traceback Ray puts in its text), else ``str(err)``."""
    problem = store_problem(err)
    if problem is not None:
        return problem
    cause = getattr(err, "cause", None)
    return str(cause) if isinstance(cause, BaseException) else str(err)
