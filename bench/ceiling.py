"""The ceiling of the cached path: a minimal Flask endpoint returning a constant body.

It runs under the same gunicorn settings as the bridge (the Procfile's), with a body of
the same size (``CEILING_BYTES``), so the difference is what feedbridge itself costs.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from flask import Flask, Response

from feedbridge import logs
from feedbridge.server import AccessLog

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

BODY = b"x" * int(os.environ.get("CEILING_BYTES", "30000"))
app = Flask(__name__)


@app.get("/feed")
def feed() -> Response:
    return Response(BODY, content_type="application/atom+xml; charset=utf-8")


@app.get("/healthz")
def healthz() -> str:
    return "ok"


def logged() -> WSGIApplication:
    """The app writing the bridge's access line per request (a granian factory)."""
    logs.configure("logfmt")
    logging.getLogger("feedbridge").setLevel(logging.INFO)
    return AccessLog(app)
