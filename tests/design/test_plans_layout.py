"""The cqs_design.plans subpackage: public import paths, and no import cycle between its modules."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cqs_design.plans

PACKAGE = Path(cqs_design.plans.__file__).parent
MODULES = ("mask", "check", "intervals", "build", "design", "serialize", "plan")


def _imports(module: str) -> set[str]:
    """The cqs_design.plans modules (or the package itself) that ``module`` imports."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if node.level:
                names = [f"cqs_design.plans.{node.module}"]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name == "cqs_design.plans":
                found.add("<package>")
            elif name.startswith("cqs_design.plans."):
                found.add(name.split(".")[2])
    return found & (set(MODULES) | {"<package>"})


def test_the_seven_modules_exist_and_the_old_ones_are_gone() -> None:
    assert sorted(p.stem for p in PACKAGE.glob("*.py")) == sorted([*MODULES, "__init__"])
    for old in ("_plan_build", "_plan_check", "_plan_design", "_plan_intervals", "_plan_json",
                "_plan_mask"):
        assert not (PACKAGE.parent / f"{old}.py").exists()


def test_no_import_cycle() -> None:
    """Each module imports only modules listed before it in MODULES, never the package."""
    for i, module in enumerate(MODULES):
        deps = _imports(module)
        assert "<package>" not in deps, f"{module} imports cqs_design.plans itself"
        later = deps - set(MODULES[:i])
        assert not later, f"{module} imports {sorted(later)}, listed after it (a cycle risk)"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module: str) -> None:
    code = f"import cqs_design.plans.{module}"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_public_import_paths() -> None:
    from cqs_design.plans import (  # noqa: F401
        DEFAULT_MAX_TASK_TOKENS,
        SCHEMA,
        Plan,
        PlanError,
        PlanStats,
        Rect,
        Task,
        causal_pairs,
        largest_usable_q,
        make_plan,
    )

    plans = importlib.import_module("cqs_design.plans")
    for name in plans.__all__:
        assert hasattr(plans, name), name
    assert PlanError.__module__ == "cqs_design.plans"
    assert issubclass(PlanError, ValueError)
    import cqs_design

    assert cqs_design.make_plan is make_plan
    assert cqs_design.Plan is Plan


def test_plan_errors_use_the_shared_integer_check() -> None:
    from cqs_design.plans import PlanError, make_plan

    with pytest.raises(PlanError,
                       match=r"^seq_len must be an integer in \[1, 1099511627776\], got 0$"):
        make_plan(0)
    with pytest.raises(TypeError, match=r"^kv_len must be an integer, got '3' of type str$"):
        make_plan(10, kv_len="3")
