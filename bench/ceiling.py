"""The ceiling of the cached path: a minimal Flask endpoint returning a constant body.

It runs under the same gunicorn settings as the bridge (the Procfile's), with a body of
the same size (``CEILING_BYTES``), so the difference is what feedbridge itself costs.
"""

from __future__ import annotations

import os

from flask import Flask, Response

BODY = b"x" * int(os.environ.get("CEILING_BYTES", "30000"))
app = Flask(__name__)


@app.get("/feed")
def feed() -> Response:
    return Response(BODY, content_type="application/atom+xml; charset=utf-8")


@app.get("/healthz")
def healthz() -> str:
    return "ok"
