"""Every example in the documentation runs (issue 14).

* every ``>>>`` example in every module of ``cqs_attention`` (found by walking the package, so a
  new module is collected without editing this file; ``cqs_design``'s modules are collected by
  ``--doctest-modules cqs_design`` in scripts/test.sh);
* every ``>>>`` block of README.md and docs/*.md, read fence-aware: only the lines inside a
  fenced code block are examples, so the closing fence is never taken as expected output.
  The blocks of one file share a namespace, in order, like one doctest session;
* every relative link of README.md and docs/*.md points to a file (and heading) that exists.

Examples that need a GPU carry ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTIONFLAGS = doctest.ELLIPSIS

# Modules and documents whose examples are not run for now, each with the reason.
SKIP_ENGINE_REWRITE: dict[str, str] = {
}
# Documents of other owners whose examples fail today; strict xfail, so the fix must remove the
# entry (a passing xfail fails the run: xfail_strict = true).
KNOWN_FAILING: dict[str, str] = {}


def _attention_modules() -> list[str]:
    pkg = importlib.import_module("cqs_attention")
    names = ["cqs_attention"]
    for info in pkgutil.walk_packages(pkg.__path__, prefix="cqs_attention."):
        names.append(info.name)
    return sorted(names)


def _skip_marks(name: str) -> list[pytest.MarkDecorator]:
    if name in SKIP_ENGINE_REWRITE:
        return [pytest.mark.skip(reason=f"engine rewrite in progress (issue 12): "
                                        f"{SKIP_ENGINE_REWRITE[name]}")]
    if name in KNOWN_FAILING:
        return [pytest.mark.xfail(reason=KNOWN_FAILING[name], strict=True)]
    return []


def _run(tests: Iterable[doctest.DocTest], what: str) -> int:
    """Run ``tests``; fail with the runner's report if any example fails. Returns the count."""
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append, clear_globs=False)
    result = runner.summarize(verbose=False)
    if result.failed:
        pytest.fail(f"{result.failed} of {result.attempted} examples of {what} failed:\n"
                    + "".join(report), pytrace=False)
    return result.attempted


@pytest.mark.parametrize("name", [pytest.param(n, marks=_skip_marks(n))
                                  for n in _attention_modules()])
def test_module_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    _run(finder.find(module, name), name)  # each docstring gets a copy of the module globals


# ------------------------------------------------------------------------ markdown ----

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


def markdown_code_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(first line number, info string, code)`` of each fenced code block of ``text``.

    The fences themselves are not part of the code (CommonMark: a block closes at a fence of
    the same character at least as long as the opening one).

    >>> markdown_code_blocks("x\\n```python\\n>>> 1 + 1\\n2\\n```\\ny\\n")
    [(3, 'python', '>>> 1 + 1\\n2\\n')]
    """
    blocks: list[tuple[int, str, str]] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i].rstrip("\n"))
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j].rstrip("\n"))
            if (closing is not None and closing["fence"][0] == fence[0]
                    and len(closing["fence"]) >= len(fence) and not closing["info"].strip()):
                break
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])
            j += 1
        blocks.append((i + 2, opening["info"].strip(), "".join(body)))
        i = j + 1
    return blocks


def test_closing_fence_is_not_expected_output() -> None:
    text = "```pycon\n>>> print('a')\na\n```\n"
    parser = doctest.DocTestParser()
    ((_, _, code),) = markdown_code_blocks(text)
    (example,) = parser.get_examples(code)
    assert example.want == "a\n"
    # read naively, the closing fence would have been expected output
    (naive,) = parser.get_examples(text)
    assert naive.want == "a\n```\n"


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", [pytest.param(p, id=_doc_id(p), marks=_skip_marks(_doc_id(p)))
                                  for p in DOCS])
def test_markdown_examples(path: Path) -> None:
    parser = doctest.DocTestParser()
    blocks = [(n, code) for n, _, code in markdown_code_blocks(path.read_text()) if ">>>" in code]
    if not blocks:
        pytest.skip(f"{_doc_id(path)} has no >>> examples")

    def tests():  # built one at a time: each block starts from the namespace the last one left
        globs: dict = {}
        for lineno, code in blocks:
            test = parser.get_doctest(code, globs, f"{_doc_id(path)}:{lineno}", str(path),
                                      lineno - 1)
            yield test
            globs = test.globs

    _run(tests(), _doc_id(path))


# --------------------------------------------------------------------------- links ----

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text()
    in_code = {ln for ln0, _, code in markdown_code_blocks(text)
               for ln in range(ln0 - 1, ln0 + code.count("\n") + 1)}
    return {_slug(line.lstrip("#")) for n, line in enumerate(text.splitlines(), start=1)
            if line.startswith("#") and n not in in_code}


def _links(path: Path) -> list[str]:
    text = path.read_text()
    for _, _, code in markdown_code_blocks(text):
        text = text.replace(code, "")
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [a or b for a, b in _LINK.findall(text)]


@pytest.mark.parametrize("path", [pytest.param(p, id=_doc_id(p), marks=_skip_marks(
    f"links:{_doc_id(p)}")) for p in DOCS])
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _links(path):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists() or ROOT not in (dest, *dest.parents):
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{_doc_id(path)}: broken links: {broken}"
