"""What KCNA Watch looks like: its hosts, the shape of its URLs, the headings of its
pages, its dates, its walls. The one module that knows the site's vocabulary; the
scraper, the article parser and the HTTP client read it from here.

Taken from captured pages of the site and from scrapers that read it between 2020 and
2026 (see ``tests/fixtures/README.md``); what is certain is the shape of an article URL,
so parsing anchors on that and uses the rest as hints.
"""

from __future__ import annotations

import re
from datetime import date

HOSTS = frozenset({"kcnawatch.org", "www.kcnawatch.org"})

# /newstream/<unix_ts>-<id>/<slug>/: the one thing about a story that never changes.
ARTICLE_PATH = re.compile(r"^/newstream/(\d{9,10})-(\d{5,12})(?:/([^/]*))?/?$")
# The all-sources archive, newest first: /newstream/ is its page 1, then WordPress's
# /newstream/page/<n>/ (inferred, see SITE.md "The archive").
ARCHIVE_ROOT = "/newstream/"
ARCHIVE_PAGE = re.compile(r"^/newstream/page/(\d{1,6})/?$")
# "Date: 02/11/2024 | Source: Voice of Korea (EN) | Read original …": the story's source.
SOURCE_LINE = re.compile(r"\bSource:\s*([^|]*?)\s*\|")

# Section headings. "More From <label>" starts a source's listing (on any of its article
# pages); the home page lists under "Latest Articles"; the next heading ends a listing.
MORE_FROM = re.compile(r"^more from\s+(.+)$", re.IGNORECASE)
LATEST = re.compile(r"^latest articles\b", re.IGNORECASE)
SECTION_END = re.compile(
    r"^(more articles|more from\s.+|north korea in pictures|latest articles\b.*|related\b.*"
    r"|trending\b.*|most (read|popular)\b.*)$",
    re.IGNORECASE,
)
# The same headings, tried on raw text nodes (squashing them all first costs a parse).
HEADING_START = re.compile(
    r"^\s*(more\s+from|more\s+articles|latest\s+articles|north\s+korea\s+in\s+pictures"
    r"|related|trending|most\s+read|most\s+popular)\b",
    re.IGNORECASE,
)
# What ends an article's body: the first heading after it.
BODY_END = re.compile(r"^(more from\s.{1,60}|more articles)$", re.IGNORECASE)

# Dates. A listing says "March 22, 2026" (one template zero-pads the day); an article's
# "Date: 02/11/2024 | Source: …" line is day first.
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
LISTED_DATE = re.compile(rf"\b({_MONTHS}) (\d{{1,2}}), (\d{{4}})(?!\d)")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS.split("|"), 1)}
ARTICLE_DATE = re.compile(r"\bDate:\s*(\d{1,2})/(\d{1,2})/(\d{4})\b", re.IGNORECASE)
DATE_LINE = re.compile(rf"^{ARTICLE_DATE.pattern}.*\bSource:", re.IGNORECASE)

# Lines the site injects into some article bodies (template (b)); they are not the story.
PROMO = re.compile(r"^(join the nk pro team|nk news is hiring|upgrade to nk pro)\b", re.IGNORECASE)
# The link an article page gives to the outlet's own copy.
ORIGINAL_LINK_TEXT = "Read original version at source"

# Parts of a page around its content: never items, never a story's body.
CHROME_TAGS = frozenset({"header", "nav", "aside", "footer"})

# Walls: the sign-up form in a page, the paths it redirects to, bot challenges.
WALL_MARKERS = ("nk-paywall-free-member-form", "free-member-form")
WALL_PATHS = ("/free-member-form", "/wp-login.php", "/login")
CHALLENGE_MARKERS = (b"cf-challenge", b"challenge-form", b"<title>just a moment", b"cf_chl_")


def parse_listed_date(text: str) -> date | None:
    """``March 22, 2026`` (or ``January 02, 2026``) somewhere in ``text``."""
    match = LISTED_DATE.search(text)
    if not match:
        return None
    try:
        month, day, year = match.groups()
        return date(int(year), _MONTH_NUMBERS[month], int(day))
    except ValueError:
        return None


def parse_article_date(text: str) -> date | None:
    """The article line ``Date: 02/11/2024``: day first, so 2 November 2024."""
    match = ARTICLE_DATE.search(text)
    if not match:
        return None
    day, month, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None
