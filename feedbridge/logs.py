"""One form for every log line: the app's, its access lines and the server's.

Each line is logfmt with a UTC ISO 8601 time, its level and its logger::

    time=2026-03-20T09:15:02.123Z level=info logger=feedbridge.upstream event=fetch ...

or, with ``FEEDBRIDGE_LOG_FORMAT=json``, the same fields as one JSON object. A message
that is itself logfmt (the app's events) gives its fields; any other is ``msg=``.
Terminal colours (the development server's) are taken out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from feedbridge.text import logfmt, parse_logfmt

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Formatter(logging.Formatter):
    """A record as logfmt, or as a JSON object with ``form="json"``."""

    def __init__(self, form: str = "logfmt") -> None:
        super().__init__()
        self.form = form

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        fields: dict[str, object] = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = _ANSI.sub("", record.getMessage())
        # A line logged with its fields (extra={"fields": ...}) keeps their types in JSON.
        fields.update(getattr(record, "fields", None) or parse_logfmt(message) or {"msg": message})
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        if self.form == "json":
            return json.dumps(fields, ensure_ascii=False)
        return logfmt(**fields)


def configure(form: str) -> None:
    """Log to standard error in ``form``; a no-op when the host set up logging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(form))
    logging.basicConfig(handlers=[handler])
