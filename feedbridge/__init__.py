"""feedbridge: RSS 2.0, Atom 1.0 and JSON Feed for KCNA Watch, one feed per source."""

from __future__ import annotations

__version__ = "0.1.0"

from feedbridge.app import create_app

__all__ = ["__version__", "create_app"]
