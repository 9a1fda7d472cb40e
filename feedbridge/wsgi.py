"""The WSGI entry point for gunicorn: ``gunicorn feedbridge.wsgi:app``.

A bad setting stops start-up with one line naming it, instead of a traceback per worker.
"""

from __future__ import annotations

import logging
import sys

from feedbridge.app import create_app
from feedbridge.config import LOG_FORMAT
from feedbridge.errors import ConfigError

logging.basicConfig(format=LOG_FORMAT, stream=sys.stderr)
try:
    app = create_app()
except ConfigError as exc:
    print(f"feedbridge: {exc}", file=sys.stderr)
    raise SystemExit(4) from None
