"""Shared pytest configuration: hypothesis profiles and the ``gpu`` marker."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With ``CQS_GPU_RECORD`` set (the GPU runs), append each test's outcome as a JSON line
    as soon as it is known: a run cut short by a time limit or a crash keeps what it saw."""
    path = os.environ.get("CQS_GPU_RECORD")
    if not path or (report.when != "call" and report.outcome == "passed"):
        return
    import json

    entry = {"test": "outcome", "nodeid": report.nodeid, "when": report.when,
             "outcome": report.outcome, "seconds": round(report.duration, 3)}
    if report.outcome == "failed":
        entry["error"] = str(report.longrepr)[-3000:]
    with open(path, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
