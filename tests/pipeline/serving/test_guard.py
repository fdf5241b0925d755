"""The model server's guard (pipeline.serving.guard), as an ASGI app in this process: a body past the byte limit is a
413 (by its declared length, or as its bytes arrive), JSON nested past the depth limit a 400, both before the app
behind it sees the request; everything else reaches that app with its body whole. The depth scan is checked against
the depth Python's own parser finds."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from pipeline.serving.guard import (
    DEFAULT_MAX_BYTES,
    MAX_DEPTH,
    Guard,
    json_depth,
    max_bytes_from,
)


def depth_of(value) -> int:
    """The reference: how deep a parsed JSON value's arrays and objects nest."""
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


TRICKY = ['[', ']', '{', '}', '"', '\\', '\\"', '"[', '\\\\', 'é', '\\u005b', '']


def random_value(rng: random.Random, depth: int):
    kind = rng.random()
    if depth > 7 or kind < 0.3:
        return rng.choice([rng.choice(TRICKY) * rng.randint(1, 3), rng.randint(-9, 9), None, True, 1.5])
    if kind < 0.65:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(TRICKY) + str(i): random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}


@pytest.mark.parametrize("seed", range(8))
def test_the_depth_scan_agrees_with_the_parser(seed):
    rng = random.Random(seed)
    for _ in range(200):
        value = random_value(rng, 0)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        assert json.loads(text) == value
        assert json_depth(text.encode(), 10**6) == depth_of(value), text


def test_the_depth_scan_stops_once_past_the_limit():
    deep = b"[" * 100_000 + b"]" * 100_000
    assert json_depth(deep, 64) == 65
    assert json_depth(b'{"inputs": {"puzzle": [[[1, 2], [3, 4]]]}}', 64) == 5  # a request of JSON grids


class App:
    """The app behind the guard: records each request's scope and whole body, answers 200."""

    def __init__(self):
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.seen.append((scope["method"], body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(guard: Guard, chunks: list[bytes], *, method: str = "POST", declared: int | None = None,
         content_type: str = "application/json") -> tuple[int, bytes, int]:
    """One request through ``guard``: (status, response body, chunks it read)."""
    headers = [(b"content-type", content_type.encode())]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "method": method, "path": "/invocations", "headers": headers}
    read = [0]
    sent: list[dict] = []

    async def receive():
        i = read[0]
        read[0] += 1
        if i < len(chunks):
            return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), read[0]


def test_a_body_past_the_limit_is_a_413_before_the_app_sees_it():
    app = App()
    guard = Guard(app, max_bytes=1000)
    status, body, read = call(guard, [b"x" * 2000], declared=2000)
    assert (status, read) == (413, 0)  # refused by its declared length: not a byte read
    assert json.loads(body) == {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "request too large: at most 1,000 "
                                "bytes (HRM_SERVE_MAX_BYTES), got 2,000 bytes; split the request"}
    status, body, read = call(guard, [b"x" * 400] * 10)  # chunked, no length declared: stopped as it passes
    assert (status, read) == (413, 3)
    assert json.loads(body)["message"] == ("request too large: at most 1,000 bytes (HRM_SERVE_MAX_BYTES), got more "
                                           "bytes than that; split the request")
    assert app.seen == []


def test_json_nested_too_deep_is_a_400_before_the_app_sees_it():
    app = App()
    guard = Guard(app, max_bytes=10**6)
    deep = b'{"inputs": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    status, body, _ = call(guard, [deep[:50], deep[50:]])
    assert status == 400
    assert json.loads(body) == {"error_code": "MALFORMED_REQUEST", "message": f"the request's JSON is nested more "
                                f"than {MAX_DEPTH} deep: a request of puzzles is at most 5 deep"}
    assert app.seen == []
    at_limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert call(guard, [at_limit])[0] == 200
    assert call(guard, [deep], content_type="text/csv")[0] == 200  # not JSON: not scanned (CSV does not nest)
    assert app.seen == [("POST", at_limit), ("POST", deep)]


def test_everything_else_reaches_the_app_whole():
    app = App()
    guard = Guard(app, max_bytes=1000)
    chunks = [b'{"inputs": {"puzzle": ', b'["1.3.....2...4..1"', b"]}}"]
    assert call(guard, chunks, declared=sum(map(len, chunks))) == (200, b"ok", 3)
    assert call(guard, [b"x" * 1000])[0] == 200  # at the limit
    assert call(guard, [b""], method="GET")[0] == 200  # not a POST: passed on as it is
    assert app.seen == [("POST", b"".join(chunks)), ("POST", b"x" * 1000), ("GET", b"")]


@pytest.mark.parametrize("env, expected", [({}, DEFAULT_MAX_BYTES), ({"HRM_SERVE_MAX_BYTES": " "}, DEFAULT_MAX_BYTES),
                                           ({"HRM_SERVE_MAX_BYTES": "4096"}, 4096)])
def test_the_byte_limit_is_read_from_the_environment(env, expected):
    assert max_bytes_from(env) == expected


@pytest.mark.parametrize("raw", ["0", "-5", "1e6", "16M", "lots"])
def test_a_bad_byte_limit_names_the_variable(raw):
    with pytest.raises(ValueError, match=f"HRM_SERVE_MAX_BYTES must be a positive integer \\(bytes\\), got '{raw}'"):
        max_bytes_from({"HRM_SERVE_MAX_BYTES": raw})
