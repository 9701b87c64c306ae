"""The documentation says what the code does (issue "no silent minute", item 9).

* every ``$ command`` in a ```` ```console ```` block of README.md and docs/*.md is run, and the
  lines the block shows after it must appear in its output (stdout and stderr together), in
  order; ``...`` in a shown line stands for any text (time, rounding errors), and a shown
  output that is JSON is compared as JSON. ``cqs-design`` / ``cqs-attention`` run as
  ``python -m`` of this interpreter, so the test needs no installed entry points;
* every file path the docs name in backticks (``cqs_attention/engine/``, ``scripts/test.sh``,
  ...) exists, and every dotted name (``cqs_attention.api.attention``) imports;
* every name docs/plans.md uses that a ``cqs_design.plans`` module exports can be imported
  from ``cqs_design.plans`` itself, as the page says.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _console_commands() -> list[tuple[str, str, list[str]]]:
    """``(where, command, shown output lines)`` for every ``$`` line of a console block."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() != "```console":
                i += 1
                continue
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                if not lines[i].startswith("$ "):
                    i += 1
                    continue
                where = f"{doc.name}:{i + 1}"
                command = lines[i][2:]
                while command.endswith("\\"):
                    i += 1
                    command = command[:-1] + " " + lines[i].strip()
                i += 1
                shown = []
                while i < len(lines) and not lines[i].startswith(("$ ", "```")):
                    shown.append(lines[i])
                    i += 1
                found.append((where, command, shown))
    return found


COMMANDS = _console_commands()


def _shell(command: str) -> str:
    """``command`` with the two CLIs run as ``python -m`` of this interpreter."""
    python = f'"{sys.executable}" -m'
    return re.sub(r"(^|[;&|]\s*)cqs-(design|attention)\b",
                  lambda m: f"{m.group(1)}{python} cqs_{m.group(2)}", command)


def _matches(shown: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, actual) is not None


def test_the_docs_show_commands() -> None:
    where = {w.split(":")[0] for w, _, _ in COMMANDS}
    assert {"difference_sets.md", "use_in_your_model.md"} <= where
    assert sum(1 for _, _, shown in COMMANDS if shown) >= 8


@pytest.mark.parametrize(("where", "command", "shown"), COMMANDS,
                         ids=[f"{w} {c[:40]}" for w, c, _ in COMMANDS])
def test_documented_command_prints_what_the_docs_show(where: str, command: str,
                                                      shown: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run(["bash", "-c", "exec 2>&1; " + _shell(command)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)
    output = proc.stdout
    if 'echo "exit $?"' not in command:
        assert proc.returncode == 0, f"{where}: {command}\n{output}"
    text = "\n".join(shown).strip()
    if text.startswith(("{", "[")):
        assert json.loads(output) == json.loads(text), where
        return
    actual = [line for line in re.split(r"[\r\n]+", output) if line.strip()]
    pos = 0
    for line in shown:
        while pos < len(actual) and not _matches(line, actual[pos]):
            pos += 1
        assert pos < len(actual), (f"{where}: {command}\nthe docs show\n  {line}\nbut the "
                                   f"output is\n" + "\n".join(f"  {a}" for a in actual))
        pos += 1


def _backticked() -> list[tuple[str, str]]:
    return [(doc.name, span) for doc in DOCS
            for span in re.findall(r"`([^`\n]+)`", doc.read_text())]


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_paths_the_docs_name_exist() -> None:
    missing = []
    for doc, span in _backticked():
        for path in re.findall(r"(?<![\w/.])((?:cqs_attention|cqs_design|benchmarks|scripts|"
                               r"tests|docs)/[\w/.\-]*\w)(?![\w<])", span):
            if "<" in span or "*" in span:  # a template such as results/<name>.json
                continue
            if not (ROOT / path).exists():
                missing.append(f"{doc}: {path}")
    assert not missing, "docs name files that do not exist:\n" + "\n".join(missing)


def test_dotted_names_the_docs_use_import() -> None:
    missing = [f"{doc}: {name}" for doc, span in _backticked()
               for name in re.findall(r"(?<![\w/.])((?:cqs_attention|cqs_design)(?:\.\w+)+)",
                                      span)
               if not _resolves(name)]
    assert not missing, "docs name things that do not import:\n" + "\n".join(missing)


def test_plans_page_names_import_from_cqs_design_plans() -> None:
    """docs/plans.md: "every name is imported from there" (estimate_rectangles and MAX_TOKENS
    were not)."""
    import cqs_design.plans as plans

    exported = {}
    for info in pkgutil.iter_modules(plans.__path__):
        module = importlib.import_module(f"cqs_design.plans.{info.name}")
        exported.update(dict.fromkeys(getattr(module, "__all__", ()), info.name))
    used = set(re.findall(r"`([A-Za-z_]\w*)", (ROOT / "docs" / "plans.md").read_text()))
    missing = sorted(n for n in used if n in exported and not hasattr(plans, n))
    assert not missing, f"docs/plans.md names {missing}, not importable from cqs_design.plans"
    assert {"estimate_rectangles", "MAX_TOKENS"} <= set(plans.__all__)
