"""The code stays in pieces one can read: no function of feedbridge/ over 60 lines, no
class over 300 (docs/contributing.md says so)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "feedbridge"
MAX_FUNCTION = 60
MAX_CLASS = 300


def sizes(source: str, *, kinds: tuple[type[ast.AST], ...]) -> list[tuple[str, int]]:
    """Each definition of ``kinds`` in ``source`` (nested ones too): its name and lines,
    decorators and docstring included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, kinds):
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            found.append((f"{node.name}:{node.lineno}", node.end_lineno - first + 1))
    return found


def too_long(kinds: tuple[type[ast.AST], ...], limit: int) -> list[str]:
    return [
        f"{module.name} {name}: {lines} lines"
        for module in sorted(PACKAGE.glob("*.py"))
        for name, lines in sizes(module.read_text(encoding="utf-8"), kinds=kinds)
        if lines > limit
    ]


def test_no_function_is_over_60_lines() -> None:
    assert too_long((ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION) == []


def test_no_class_is_over_300_lines() -> None:
    assert too_long((ast.ClassDef,), MAX_CLASS) == []


@pytest.mark.parametrize(
    ("kinds", "limit", "body"),
    [
        ((ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION, "    x = 1\n"),
        ((ast.ClassDef,), MAX_CLASS, "    x = 1\n"),
    ],
)
def test_the_checker_measures_what_it_says(
    kinds: tuple[type[ast.AST], ...], limit: int, body: str
) -> None:
    """A definition of exactly the limit passes, one line more is caught, nested or not."""
    head = "def f():\n" if kinds != (ast.ClassDef,) else "class C:\n"
    at_limit = head + body * (limit - 1)
    over = "@decorated\n" + at_limit
    nested = "class Outer:\n" + "".join("    " + line + "\n" for line in over.splitlines())
    assert [lines for _, lines in sizes(at_limit, kinds=kinds)] == [limit]
    assert [lines for _, lines in sizes(over, kinds=kinds) if lines > limit] == [limit + 1]
    inner = [lines for name, lines in sizes(nested, kinds=kinds) if not name.startswith("Outer")]
    assert inner == [limit + 1]
