"""The WSGI entry point: ``feedbridge.wsgi:app`` (feedbridge/server.py serves it).

A bad setting stops start-up with one line naming it, instead of a traceback per worker.
"""

from __future__ import annotations

import sys

from feedbridge import logs
from feedbridge.app import create_app
from feedbridge.config import Settings
from feedbridge.errors import ConfigError

try:
    settings = Settings.from_env()
    logs.configure(settings.log_format)
    app = create_app(settings)
except ConfigError as exc:
    print(f"feedbridge: {exc}", file=sys.stderr)
    raise SystemExit(4) from None
