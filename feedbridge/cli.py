"""The ``feedbridge`` command."""

from __future__ import annotations

import logging

import click

from feedbridge import __version__
from feedbridge.config import DESCRIPTIONS, LOG_FORMAT, PREFIX, Settings
from feedbridge.errors import ConfigError

SETTINGS_HELP = "\b\n" + "\n".join(
    f"  {PREFIX}{name}: {text}" for name, text in DESCRIPTIONS.items()
)


def load_settings() -> Settings:
    """Settings from the environment; a bad one is one line and exit status 2."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(epilog=f"Settings (environment variables):\n\n{SETTINGS_HELP}")
@click.version_option(__version__, prog_name="feedbridge")
def main() -> None:
    """RSS, Atom and JSON feeds of KCNA Watch, one per source."""


@main.command(epilog=f"Settings (environment variables):\n\n{SETTINGS_HELP}")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, envvar="PORT", help="Port ($PORT).")
def serve(host: str, port: int) -> None:
    """Serve the feeds over HTTP."""
    from werkzeug.serving import run_simple

    from feedbridge.app import create_app

    settings = load_settings()
    logging.basicConfig(format=LOG_FORMAT)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"feedbridge {__version__} on http://{host}:{port}/ (site: {settings.upstream_url})")
    run_simple(host, port, app, threaded=True)
