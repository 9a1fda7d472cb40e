"""feedbridge: RSS 2.0, Atom 1.0 and JSON Feed for KCNA Watch, one feed per source."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]

if TYPE_CHECKING:
    from feedbridge.app import create_app


def __getattr__(name: str) -> object:
    # The app is imported on first use, so that importing one submodule loads nothing
    # else: the server's launcher (feedbridge.server) must set the metrics' directory
    # before the app imports prometheus_client.
    if name == "create_app":
        from feedbridge.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
