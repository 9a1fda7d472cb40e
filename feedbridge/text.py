"""Text clean-up shared by the scraper and the renderers, and the form of log lines."""

from __future__ import annotations

import json
import re

# Characters XML 1.0 forbids (C0 controls but tab/newline/return, lone surrogates,
# U+FFFE/U+FFFF), plus C1 controls and DEL, which no reader wants to see either.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """Drop the characters that may not appear in an XML document.

    A vertical tab or form feed separates words: it becomes a space, not nothing.
    """
    return _XML_ILLEGAL.sub("", text.replace("\x0b", " ").replace("\x0c", " "))


def collapse(text: str) -> str:
    """Runs of whitespace (including NBSP) collapsed to one space, ends stripped."""
    return " ".join(text.split())  # str.split() splits where \s matches


def squash(text: str) -> str:
    """XML-safe text with its whitespace collapsed."""
    return collapse(xml_safe(text))


def logfmt(**fields: object) -> str:
    """``key=value`` pairs in the given order; a value with spaces or quotes is quoted."""
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return json.dumps(text, ensure_ascii=False)


# One ``key=value`` pair as logfmt() writes it, then a space before the next key or the end.
_LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"=\\]*)(?: (?=\w)|$)')


def parse_logfmt(text: str) -> dict[str, str] | None:
    """The fields of a line :func:`logfmt` wrote, or ``None`` for any other text."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LOGFMT_PAIR.match(text, position)
        if match is None:
            return None
        key, value = match.groups()
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        fields[key] = value
        position = match.end()
    return fields or None
