"""The ``feedbridge`` command: serve the feeds, or render and check them from a shell.

Every command reads the same ``FEEDBRIDGE_*`` settings. ``render`` asks the web layer
for its pages through Flask's test client, so a file holds the same bytes a reader of
the server would get; ``check`` fetches each category's listing itself, bypassing the
cache, as a canary for a cron job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
from click.exceptions import NoArgsIsHelpError
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, run_simple

from feedbridge import __version__, logs, server
from feedbridge.app import create_app, start_refresher
from feedbridge.archive import BUSY, Step
from feedbridge.bridge import FeedService
from feedbridge.categories import Category, load_registry
from feedbridge.config import PREFIX, Settings, http_url, masked, setting_descriptions
from feedbridge.config import port as platform_port
from feedbridge.errors import ConfigError, UpstreamError
from feedbridge.feeds import Format
from feedbridge.refresher import Refresher, RefreshResult
from feedbridge.web import ERROR_SINK, feed_urls

SETTINGS_HELP = "\b\n" + "\n".join(
    f"  {name}: {text}" for name, text in setting_descriptions().items()
)
EPILOG = f"Settings (environment variables):\n\n{SETTINGS_HELP}"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_BASE_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"  # with $PORT's port when set
# Where a command notes the exit status it will end with, before it has printed all:
# a reader that stops early (`check | head -1`) does not turn a failure into success.
EXIT_STATUS = "feedbridge.exit_status"


class OneLineUsageError(click.UsageError):
    """A bad argument or setting, shown as one line that says where help is."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx else ""
        click.echo(f"Error: {self.format_message()}{hint}", file=file, err=file is None)


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except (OneLineUsageError, NoArgsIsHelpError):
        raise
    except click.UsageError as exc:
        raise OneLineUsageError(exc.format_message(), exc.ctx) from None


class _Group(click.Group):
    """Turns click's usage errors (usage block, hint, message) into one line."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage_errors():
            try:
                return super().invoke(ctx)
            except BrokenPipeError:
                # Whoever read the output stopped (`| head`): not a failure of its own,
                # but what the command found still decides the exit status (`check`'s 1).
                # What is still buffered goes nowhere, instead of failing again at exit.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise click.exceptions.Exit(ctx.meta.get(EXIT_STATUS, 0)) from None


def load_settings(*, quiet: bool = False) -> Settings:
    """Settings from the environment; a bad one is one line and exit status 2.

    ``quiet``: no warning of unknown variables, when the server this process becomes warns.
    """
    try:
        return Settings.from_env(warn=not quiet)
    except ConfigError as exc:
        raise OneLineUsageError(str(exc)) from None


def build_app(settings: Settings) -> Flask:
    """The app, or one line and exit status 2 for a bad categories file."""
    logs.configure(settings.log_format)
    try:
        return create_app(settings)
    except ConfigError as exc:
        raise OneLineUsageError(str(exc)) from None


def batch_app(base_url: str | None = None) -> Flask:
    """The app for a one-shot command, its self links on ``base_url``.

    The base URL is ``base_url``, else ``FEEDBRIDGE_PUBLIC_URL``, else the address of
    ``feedbridge serve``. Only warnings and errors are logged unless
    ``FEEDBRIDGE_LOG_LEVEL`` is set, so that a cron job that succeeds prints nothing.
    """
    settings = load_settings()
    changes: dict[str, Any] = {
        "public_url": _public_url(settings, base_url),
        "refresh": False,  # a command refreshes what it needs in the foreground
    }
    if not os.environ.get(PREFIX + "LOG_LEVEL", "").strip():
        changes["log_level"] = "WARNING"
    app = build_app(dataclasses.replace(settings, **changes))
    # The store the command opened is closed when it ends, however it ends.
    click.get_current_context().call_on_close(_service(app).store.close)
    return app


def _public_url(settings: Settings, base_url: str | None) -> str:
    """``--base-url``, else ``FEEDBRIDGE_PUBLIC_URL``, else where ``serve`` listens
    (``$PORT``'s port, as ``serve`` takes it)."""
    chosen = base_url or settings.public_url
    if chosen:
        return chosen
    try:
        return f"http://{DEFAULT_HOST}:{platform_port()}"
    except ConfigError as exc:
        raise OneLineUsageError(str(exc)) from None


def _service(app: Flask) -> FeedService:
    service: FeedService = app.extensions["feedbridge"]
    return service


def _base_url(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return http_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


base_url_option = click.option(
    "--base-url",
    metavar="URL",
    callback=_base_url,
    help="Where the feeds are served, for self links "
    f"(default: {PREFIX}PUBLIC_URL, else {DEFAULT_BASE_URL}).",
)


@click.group(cls=_Group, epilog=EPILOG)
@click.version_option(__version__, prog_name="feedbridge")
def main() -> None:
    """RSS, Atom and JSON feeds of KCNA Watch, one per source."""


# --- categories -------------------------------------------------------------------------


@main.command(epilog=EPILOG)
@base_url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def categories(base_url: str | None, as_json: bool) -> None:
    """List every category: slug, title, source label and feed URLs."""
    # The categories and their URLs only: no store, no app (nothing is read or written).
    settings = load_settings()
    try:
        registry = load_registry(settings.categories_file)
    except ConfigError as exc:
        raise OneLineUsageError(str(exc)) from None
    root = _public_url(settings, base_url) + "/"
    listed = [(category, feed_urls(root, category)) for category in registry.values()]
    if as_json:
        rows = [
            {
                "slug": category.slug,
                "title": category.title,
                "label": category.label,
                "language": category.language,
                "feeds": feeds,
            }
            for category, feeds in listed
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = [("slug", "title", "source label", *(fmt.value for fmt in Format))]
    table += [
        (category.slug, category.title, category.label or "(every source)", *feeds.values())
        for category, feeds in listed
    ]
    _echo_table(table)


def _echo_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(_columns(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (
            cell + " " * (width - _columns(cell)) for cell, width in zip(row, widths, strict=True)
        )
        click.echo("  ".join(cells).rstrip())


def _columns(text: str) -> int:
    """How many columns of a terminal ``text`` takes: East Asian wide characters (Korean
    titles) take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


# --- render -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One page of the server and the file under the output directory that holds it."""

    url: str
    file: str


def site_targets(app: Flask) -> list[Target]:
    """Every page of a static copy, at the same paths as on the server."""
    feeds = [
        Target(f"/feeds/{slug}.{fmt.value}", f"feeds/{slug}.{fmt.value}")
        for slug in _service(app).registry
        for fmt in Format
    ]
    return [*feeds, Target("/feeds.opml", "feeds.opml"), Target("/", "index.html")]


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: a reader sees the old file or the new, never half of one.

    The data goes to a temporary file in the same directory (so the same file system),
    which is then renamed over ``path``; its mode is what a plain ``open`` would give.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@main.command(epilog=EPILOG, short_help="Render one feed, or every page into a directory.")
@click.argument("slug", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in Format]),
    help="Format of the one feed (default: atom).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the one feed to FILE instead of standard output.",
)
@click.option("--all", "render_all", is_flag=True, help="Render every page into --out DIR.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --all: the directory to write feeds/<slug>.<format>, feeds.opml and index.html.",
)
@base_url_option
def render(
    slug: str | None,
    fmt: str | None,
    output: Path | None,
    render_all: bool,
    out: Path | None,
    base_url: str | None,
) -> None:
    """Render one feed (SLUG) to standard output or a file, or --all into a directory.

    \b
    feedbridge render vok-en --format rss -o vok-en.rss
    feedbridge render --all --out /var/www/feedbridge --base-url https://example.org/feedbridge

    Files are replaced atomically; a page that fails keeps its previous file, and the
    exit status is 1. --base-url is where DIR is served: a feed's self link is
    URL/feeds/<slug>.<format>.
    """
    if render_all:
        if slug is not None or fmt is not None or output is not None:
            raise click.UsageError("--all renders every feed: give no SLUG, --format or -o")
        if out is None:
            raise click.UsageError("--all needs --out DIR")
        app = batch_app(base_url)
        _bring_up_to_date(app)
        _render_all(app, out)
        return
    if slug is None:
        raise click.UsageError("give a category SLUG, or --all --out DIR")
    if out is not None:
        raise click.UsageError("--out goes with --all; for one feed use -o FILE")
    _render_one(slug, fmt, output, base_url)


def _render_one(slug: str, fmt: str | None, output: Path | None, base_url: str | None) -> None:
    """``render SLUG``: the category's feed to standard output, or to ``output``."""
    app = batch_app(base_url)
    registry = _service(app).registry
    if slug not in registry:
        raise click.UsageError(f"no category {slug!r}; categories: {', '.join(registry)}")
    name = f"{slug}.{fmt or Format.ATOM.value}"
    _bring_up_to_date(app, registry[slug])
    try:
        body = _get(app, f"/feeds/{name}")
    except PageFailed as exc:
        raise click.ClickException(f"{name}: {exc}") from None
    if output is None:
        sys.stdout.buffer.write(body)
        return
    try:
        write_atomically(output, body)
    except OSError as exc:
        raise click.ClickException(f"{output}: {exc.strerror or exc}") from None


def _bring_up_to_date(app: Flask, *categories: Category) -> None:
    """Refresh the categories that are due (default: all) and read their new stories'
    full text, so that the files hold what a server would serve; a failure is reported
    by the page that needs the category."""
    service = _service(app)
    Refresher(service).run_once(list(categories) or None)
    service.drain()


class PageFailed(Exception):
    """The web layer did not answer 200; the message is its status and the detailed error
    (a reader gets only its kind), else the answer's text."""


def _get(app: Flask, url: str) -> bytes:
    errors: list[UpstreamError] = []
    response = app.test_client().get(url, environ_base={ERROR_SINK: errors})
    if response.status_code != 200:
        detail = f"upstream failure: {errors[-1]}" if errors else response.text.strip()
        raise PageFailed(f"HTTP {response.status_code}: {detail}")
    body: bytes = response.data
    return body


def _render_all(app: Flask, out: Path) -> None:
    try:
        (out / "feeds").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"--out: cannot create {out}: {exc.strerror or exc}") from None
    targets = site_targets(app)
    interactive = sys.stderr.isatty()
    progress = (
        click.progressbar(
            targets,
            label="Rendering",
            file=sys.stderr,
            item_show_func=lambda target: target.file if target else None,
        )
        if interactive
        else contextlib.nullcontext(targets)
    )
    failures = []
    with progress as pages:
        for target in pages:
            try:
                write_atomically(out / target.file, _get(app, target.url))
            except PageFailed as exc:
                failures.append(f"{target.file} not written: {exc}")
            except OSError as exc:
                failures.append(f"{target.file} not written: {exc.strerror or exc}")
    for failure in failures:
        click.echo(failure, err=True)
    if failures:
        raise click.ClickException(f"{len(failures)} of {len(targets)} files not written")
    if interactive:
        click.echo(f"Wrote {len(targets)} files to {out}", err=True)


# --- check ------------------------------------------------------------------------------

ARCHIVE_LINE = "(archive)"  # the line of `check` about the archive, after the categories


@dataclass(frozen=True)
class CheckResult:
    """What one fresh fetch of a category (or of the archive's first page) gave."""

    slug: str
    items: int = 0
    newest: str | None = None  # ISO 8601, UTC
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_category(service: FeedService, category: Category) -> CheckResult:
    """Fetch and scrape the category's listing now, bypassing the cache.

    Article pages are not read: the canary is about the listings, and asking the site
    for every article at each check would not be polite.
    """
    try:
        listing = service.read_listing(category)
    except UpstreamError as exc:
        return CheckResult(category.slug, error=f"{exc.kind}: {exc}")
    except Exception as exc:  # a scraper bug is still one failed category, not a crash
        return CheckResult(category.slug, error=f"internal error: {exc!r}")
    assert listing is not None  # asked without validators: never "not modified"
    newest = listing.items[0].published.astimezone(UTC)
    return CheckResult(category.slug, items=len(listing.items), newest=newest.isoformat())


@main.command(epilog=EPILOG, short_help="Fetch every category now; exit 1 if any fails.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def check(as_json: bool) -> None:
    """Fetch every category now, one at a time, and report what each gave.

    For each category: the number of items, the date of the newest one and any error.
    The exit status is 1 when any category fails (the site cannot be read, or its page
    no longer lists anything: the layout changed), so that a cron job or a CI schedule
    can warn before readers notice.
    """
    service = _service(batch_app())
    width = max(len(slug) for slug in [*service.registry, ARCHIVE_LINE])
    results = []
    for category in service.registry.values():
        result = check_category(service, category)
        results.append(result)
        if not result.ok:
            click.get_current_context().meta[EXIT_STATUS] = 1
        if not as_json:
            click.echo(_check_line(result, width))
    archive = check_archive(service)
    if not as_json:
        click.echo(_check_line(archive, width))
    failed = [result.slug for result in results if not result.ok]
    if as_json:
        report = {
            "ok": not failed and archive.ok,
            "categories": [dataclasses.asdict(result) for result in results],
            "archive": dataclasses.asdict(archive),
        }
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        click.echo(f"{len(results) - len(failed)} of {len(results)} categories ok")
    if not archive.ok:
        click.echo(
            "The archive is not where the bridge looks for it (/newstream/, then "
            "/newstream/page/N/): gaps cannot be repaired, nor history backfilled.",
            err=True,
        )
    if failed or not archive.ok:
        sys.exit(1)


def check_archive(service: FeedService) -> CheckResult:
    """Archive page 1 read now: where gaps are repaired from, and whose shape is inferred."""
    try:
        page = service.archive.probe()
    except UpstreamError as exc:
        return CheckResult(ARCHIVE_LINE, error=f"{exc.kind}: {exc}")
    newest = page.items[0].published.astimezone(UTC)
    return CheckResult(ARCHIVE_LINE, items=len(page.items), newest=newest.isoformat())


def _check_line(result: CheckResult, width: int) -> str:
    if not result.ok:
        return f"{result.slug.ljust(width)}  FAILED  {result.error}"
    assert result.newest is not None
    newest = result.newest.replace("T", " ").replace("+00:00", " UTC")
    items = "item" if result.items == 1 else "items"
    return f"{result.slug.ljust(width)}  ok      {result.items:3d} {items}, newest {newest}"


# --- backfill ---------------------------------------------------------------------------


def _day(_ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is no day of the form YYYY-MM-DD", param=param
        ) from None


@main.command(epilog=EPILOG, short_help="Fill the store's history from the site's archive.")
@click.option(
    "--pages", type=click.IntRange(1, 100_000), help="Read this many archive pages (newest first)."
)
@click.option(
    "--since", metavar="YYYY-MM-DD", callback=_day, help="Read back to the stories of this day."
)
@click.option("--restart", is_flag=True, help="Start from page 1, not where the last one stopped.")
def backfill(pages: int | None, since: date | None, restart: bool) -> None:
    """Fill a new deployment's history from the site's archive, newest first: every
    story of each page, its category learnt from its article page (read for its full
    text anyway), to --pages pages, to the day --since, or to the end of what the store
    keeps (FEEDBRIDGE_KEEP_DAYS, FEEDBRIDGE_KEEP_STORIES).

    \b
    feedbridge backfill --since 2026-03-01

    One request per FEEDBRIDGE_MIN_INTERVAL. Interrupted (Ctrl-C, a crash, the site
    failing), it resumes where it stopped when run again; --restart starts over. Exit
    status 0 when done, 1 when the site fails (or another process walks the archive), 2
    for bad arguments.
    """
    if pages is not None and since is not None:
        raise click.UsageError("--pages and --since: give one of them")
    service = _service(batch_app())
    show = _bar if sys.stderr.isatty() else _page_line

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        walked = service.archive.backfill(pages=pages, since=since, restart=restart, progress=show)
    except KeyboardInterrupt:
        click.echo("\nInterrupted: run the same command again to resume.", err=True)
        sys.exit(1)
    finally:
        service.drain()
    if sys.stderr.isatty():
        click.echo(err=True)
    if walked.why == BUSY:
        click.echo("Another process is walking the archive: try again later.", err=True)
        sys.exit(1)
    if walked.error is not None:
        click.echo(
            f"Stopped at page {walked.pages + 1} ({walked.why}: {walked.error}); "
            f"{walked.stories} stories filed. Run it again to resume.",
            err=True,
        )
        sys.exit(1)
    click.echo(f"Read {walked.pages} archive pages; {walked.stories} stories filed.")


def _page_line(step: Step) -> None:
    """Not a terminal: one line per page."""
    of = f" of {step.pages}" if step.pages else ""
    click.echo(f"page {step.page}{of}: {step.stories} stories filed", err=True)


def _bar(step: Step) -> None:
    """A terminal: one line, drawn again for each page."""
    width = 30
    if step.pages:
        done = round(width * step.page / step.pages)
        bar = "[" + "#" * done + "-" * (width - done) + f"] {step.page}/{step.pages} pages"
    else:
        bar = f"{step.page} pages"
    click.echo(f"\r{bar}, {step.stories} stories filed", nl=False, err=True)


# --- refresh ----------------------------------------------------------------------------


@main.command(epilog=EPILOG, short_help="Refresh categories into the store, once or for ever.")
@click.argument("slugs", nargs=-1, metavar="[SLUG]...")
@click.option(
    "--loop",
    is_flag=True,
    help="Keep refreshing, as the server's background refresher does (one at a time "
    "among every process sharing the store).",
)
def refresh(slugs: tuple[str, ...], loop: bool) -> None:
    """Read each category's listing (default: every category) into the store, then the
    full text of new stories, and exit; exit status 1 if any category failed.

    \b
    feedbridge refresh                 # every category, once (cron, a PaaS scheduler)
    feedbridge refresh vok-en all      # these two
    feedbridge refresh --loop          # the refresher as a process of its own

    Once, every category named is read now, fresh or not. With --loop, each category is
    read when due (at least every FEEDBRIDGE_CACHE_TTL seconds, more often in its source's
    busy hours), by whichever process holds the store's refresher lease.
    """
    app = batch_app()
    service = _service(app)
    unknown = [slug for slug in slugs if slug not in service.registry]
    if unknown:
        raise click.UsageError(
            f"no category {unknown[0]!r}; categories: {', '.join(service.registry)}"
        )
    refresher = Refresher(service, progress=_progress if sys.stderr.isatty() else None)
    if loop:
        _refresh_loop(refresher)
        return
    chosen = [service.registry[slug] for slug in slugs] or list(service.registry.values())
    results = refresher.run_once(chosen, force=True)
    service.drain()
    failed = [result for result in results if not result.ok]
    for result in failed:
        click.echo(f"{result.category.slug}: FAILED ({result})", err=True)
    if failed:
        sys.exit(1)


def _progress(result: RefreshResult) -> None:
    """A line on the terminal for each category refreshed, or not."""
    when = datetime.now(UTC).strftime("%H:%M:%S")
    click.echo(f"{when} {result.category.slug}: {result}", err=True)


def _refresh_loop(refresher: Refresher) -> None:
    """Run until SIGTERM or Ctrl-C, then let the lease go for the next refresher."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if sys.stderr.isatty():
        click.echo("Refreshing every category when due; Ctrl-C stops.", err=True)
    try:
        refresher.run()
    except KeyboardInterrupt:
        pass
    finally:
        refresher.stop()


# --- serve ------------------------------------------------------------------------------


@main.command(epilog=EPILOG)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="PORT",
    help="Port ($PORT).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Run the production server with N processes, as the Procfile does (default: one "
    "threaded development server).",
)
def serve(host: str, port: int, workers: int | None) -> None:
    """Serve the feeds over HTTP."""
    settings = load_settings(quiet=workers is not None)  # the server's process says it
    app = build_app(settings)  # a bad setting stops here, with one line, in either case
    click.echo(
        f"feedbridge {__version__} on http://{host}:{port}/ (site: {masked(settings.upstream_url)})"
    )
    if workers is not None:
        # exec, so that the server's master gets the signals (SIGTERM stops the workers).
        argv = [sys.executable, *server.command(host, port, workers)]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, argv)
    start_refresher(app)
    run_simple(host, port, server.AccessLog(app), threaded=True, request_handler=Quiet)


class Quiet(WSGIRequestHandler):
    """The development server's handler, without werkzeug's request lines: the app's
    access lines are written as under the production server (:class:`server.AccessLog`)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass
