"""The model server's front door: MLflow's scoring server (its FastAPI app) behind the checks MLflow does not make,
answered before MLflow reads a request:

- at most ``HRM_SERVE_MAX_BYTES`` bytes of body (default 16 MiB; more: a 413, from the declared length before a byte
  is read, else as soon as the bytes read pass it), since MLflow holds a body in memory several times over while
  parsing it (a 200 MB body cost it 880 MB);
- JSON nested at most ``MAX_DEPTH`` deep (a 400; deeper, MLflow's parser hits Python's recursion limit and answers
  500). A request of puzzles is at most 5 deep: ``{"inputs": {"puzzle": [[[cell, ...], ...]]}}``.

uvicorn loads this file on its own (``hrm serve`` copies it beside the downloaded model and starts
``uvicorn --factory hrm_guard:make_app``), in this environment or in a virtualenv MLflow built from the model's
requirements, where this project is not installed: so it imports nothing but the standard library and MLflow.
"""

from __future__ import annotations

import json
import os
import re

MAX_BYTES_ENV = "HRM_SERVE_MAX_BYTES"
DEFAULT_MAX_BYTES = 16 << 20  # 2000 ARC puzzles of 30×30 as JSON grids are about 6 MB
MAX_DEPTH = 64
STRUCTURE = re.compile(rb'[\[\]{}"\\]')  # the only bytes that open, close or quote something in JSON


def json_depth(body: bytes, stop_past: int) -> int:
    """How deep ``body``'s arrays and objects nest (brackets inside strings not counted), found without parsing;
    the scan stops once the depth passes ``stop_past``."""
    depth = deepest = 0
    in_string = False
    skip_to = 0  # an escaped character inside a string is not a quote
    for match in STRUCTURE.finditer(body):
        at = match.start()
        if at < skip_to:
            continue
        char = body[at]
        if in_string:
            if char == 0x5C:  # backslash
                skip_to = at + 2
            elif char == 0x22:  # quote
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_past:
                    break
        elif char in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def max_bytes_from(env) -> int:
    """``HRM_SERVE_MAX_BYTES`` of ``env`` (a positive integer; unset or empty: the default); a ValueError naming it."""
    raw = env.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_BYTES_ENV} must be a positive integer (bytes), got {raw!r}")
    return int(raw)


class Guard:
    """An ASGI app: ``app`` for every request but a POST whose body is too long (413) or, as JSON, nested too deep
    (400); answers in MLflow's error form, ``{"error_code": ..., "message": ...}``."""

    def __init__(self, app, max_bytes: int, max_depth: int = MAX_DEPTH):
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(send, 413, "REQUEST_LIMIT_EXCEEDED", self.too_long(f"{int(declared):,} bytes"))
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self.refuse(send, 413, "REQUEST_LIMIT_EXCEEDED", self.too_long("more bytes than that"))
            more = message.get("more_body", False)
        if "json" in headers.get("content-type", "") and json_depth(bytes(body), self.max_depth) > self.max_depth:
            return await self.refuse(send, 400, "MALFORMED_REQUEST", f"the request's JSON is nested more than "
                                     f"{self.max_depth} deep: a request of puzzles is at most 5 deep")
        read = False

        async def replay():
            nonlocal read
            if read:
                return await receive()  # after the body: a disconnect, when the client goes
            read = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)

    def too_long(self, got: str) -> str:
        return f"request too large: at most {self.max_bytes:,} bytes ({MAX_BYTES_ENV}), got {got}; split the request"

    @staticmethod
    async def refuse(send, status: int, code: str, message: str) -> None:
        body = json.dumps({"error_code": code, "message": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def make_app():
    """uvicorn's factory: MLflow's scoring server for the model at ``$__pyfunc_model_path__`` (as MLflow's own
    ``mlflow models serve`` passes it), behind a Guard."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])
    return Guard(scoring_server.init(model), max_bytes_from(os.environ))
