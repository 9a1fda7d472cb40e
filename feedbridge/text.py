"""Text clean-up shared by the scraper and the renderers."""

from __future__ import annotations

import re

# Characters XML 1.0 forbids (C0 controls but tab/newline/return, lone surrogates,
# U+FFFE/U+FFFF), plus C1 controls and DEL, which no reader wants to see either.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_SPACE = re.compile(r"\s+")


def xml_safe(text: str) -> str:
    """Drop the characters that may not appear in an XML document."""
    return _XML_ILLEGAL.sub("", text)


def squash(text: str) -> str:
    """XML-safe text with runs of whitespace (including NBSP) collapsed to one space."""
    return _SPACE.sub(" ", xml_safe(text)).strip()
