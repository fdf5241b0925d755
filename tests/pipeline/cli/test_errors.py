"""An object store's failure, wherever it is raised (pyarrow in the driver, a Ray task, botocore), is one line: what
the store said, not the traceback Ray puts in a task error's text (a dead S3 server once gave 308 lines)."""

from __future__ import annotations

import click
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.cli.errors import one_line, store_problem

DENIED = ("When getting information for key 'x/metadata.json' in bucket 'b': AWS Error ACCESS_DENIED during HeadObject "
          "operation: No response body.")


class TaskError(OSError):
    """Like Ray's RayTaskError(OSError): its text is the remote traceback, its ``cause`` the original error."""

    def __init__(self, cause: BaseException):
        super().__init__("ray::Write() (pid=1, ip=10.0.0.1)\nTraceback (most recent call last):\n  File ...\n" +
                         str(cause))
        self.cause = cause


@pytest.mark.parametrize("err, expected", [
    (OSError(DENIED), "the object store failed: AWS Error ACCESS_DENIED during HeadObject operation: No response body."),
    (TaskError(OSError(DENIED)), "the object store failed: AWS Error ACCESS_DENIED during HeadObject operation: No "
                                 "response body."),
    (ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "The key does not exist"}}, "PutObject"),
     "the object store failed: An error occurred (InvalidAccessKeyId) when calling the PutObject operation: The key "
     "does not exist"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b"),
     'the object store failed: Could not connect to the endpoint URL: "http://127.0.0.1:9/b"'),
])
def test_a_store_failure_is_one_line(err, expected):
    assert store_problem(err) == expected == one_line(err)


def test_a_task_error_says_its_cause_not_its_traceback():
    assert one_line(TaskError(ValueError("bad puzzle in row 3"))) == "bad puzzle in row 3"
    assert store_problem(RuntimeError("boom")) is None and one_line(RuntimeError("boom")) == "boom"


def test_the_command_prints_one_line_and_exits_1():
    @main.command(name="store-fails-for-test")
    def fails() -> None:
        raise TaskError(OSError(DENIED))

    try:
        result = CliRunner().invoke(main, ["store-fails-for-test"])
    finally:
        main.commands.pop("store-fails-for-test")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: the object store failed: AWS Error ACCESS_DENIED during HeadObject operation: No response body. "
        "(hrm --debug shows where)"]
    assert isinstance(result.exception, SystemExit) and not isinstance(result.exception, click.ClickException)
