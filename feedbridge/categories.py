"""The category registry: the built-in TOML file, overlaid by the user's own."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from feedbridge.errors import ConfigError

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# A path on the site: starts with one slash, no scheme or host, no dot segments.
_SITE_PATH = re.compile(r"^/(?!/)(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]+/?)*$")


@dataclass(frozen=True, slots=True)
class Category:
    """One feed. ``label`` is None for the all-sources stream read from ``paths[0]``."""

    slug: str
    title: str
    paths: tuple[str, ...]
    label: str | None = None
    language: str = "en"
    fulltext: bool | None = None  # None: follow FEEDBRIDGE_FULLTEXT

    @property
    def feed_title(self) -> str:
        return f"KCNA Watch — {self.title}"


Registry = dict[str, Category]


def load_registry(user_file: Path | None = None) -> Registry:
    """The built-in categories, with ``user_file``'s entries added or replacing them."""
    builtin = resources.files("feedbridge").joinpath("categories.toml").read_text("utf-8")
    registry = _parse(builtin, "built-in categories.toml")
    if user_file is not None:
        try:
            text = user_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"FEEDBRIDGE_CATEGORIES_FILE: {user_file}: {exc}") from None
        registry.update(_parse(text, f"FEEDBRIDGE_CATEGORIES_FILE: {user_file}"))
    return registry


def _parse(text: str, where: str) -> Registry:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(f"{where}: values are nested too deeply") from None
    table = data.get("categories")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: expected a [categories.<slug>] table")
    return {
        slug: _category(slug, entry, f"{where}: [categories.{slug}]")
        for slug, entry in table.items()
    }


def _category(slug: str, entry: Any, where: str) -> Category:
    if not SLUG.match(slug):
        raise ConfigError(f"{where}: the slug must be lowercase ASCII words joined by hyphens")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(entry) - {"title", "label", "anchors", "listing", "language", "fulltext"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    title = entry.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ConfigError(f"{where}: 'title' must be a non-empty string")
    label = entry.get("label")
    if "listing" in entry:
        if label is not None or "anchors" in entry:
            raise ConfigError(f"{where}: give either 'listing' or 'label' with 'anchors'")
        paths: Any = [entry["listing"]]
    else:
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"{where}: 'label' (the source's exact name) is required")
        paths = entry.get("anchors")
        if not isinstance(paths, list) or not paths:
            raise ConfigError(f"{where}: 'anchors' must be a non-empty list of article paths")
    for path in paths:
        if not isinstance(path, str) or not _SITE_PATH.match(path) or "/../" in path + "/":
            raise ConfigError(f"{where}: {path!r} is not a path on the site (like '/newstream/…/')")
    language = entry.get("language", "en")
    if not isinstance(language, str) or not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)*", language):
        raise ConfigError(f"{where}: 'language' must be a language tag like 'en' or 'ko'")
    fulltext = entry.get("fulltext")
    if fulltext is not None and not isinstance(fulltext, bool):
        raise ConfigError(f"{where}: 'fulltext' must be true or false")
    return Category(
        slug=slug,
        title=title.strip(),
        paths=tuple(paths),
        label=label.strip() if isinstance(label, str) else None,
        language=language,
        fulltext=fulltext,
    )
