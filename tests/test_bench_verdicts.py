"""scripts/bench's verdict on a target: PASS, MISS, or MISS, BOUND where the same figure
for the least work any implementation does here (a verified read's parts run apart, at
once) misses the target too. Pure logic: no server, no mount."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("glancefs_bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_target_met_passes_whatever_the_bound(bench: ModuleType) -> None:
    assert bench.Figure("k", "mount / glanceclient", 1.02, "x", ">= 1", bound=0.9).result == \
        "PASS"


def test_a_target_the_least_work_misses_too_is_bound(bench: ModuleType) -> None:
    assert bench.Figure("k", "mount / glanceclient", 0.88, "x", ">= 1", bound=0.98).result == \
        "MISS, BOUND"
    assert bench.Figure("k", "CPU / floors", 1.3, "x", "<= 1.2", bound=1.25).result == \
        "MISS, BOUND"


def test_a_target_the_least_work_meets_is_a_plain_miss(bench: ModuleType) -> None:
    assert bench.Figure("k", "far mount / bound", 0.75, "x", ">= 0.8", bound=1.12).result == \
        "MISS"
    assert bench.Figure("k", "far mount / bound", 0.75, "x", ">= 0.8").result == "MISS"


def test_a_bound_is_read_from_the_figure_it_names(bench: ModuleType) -> None:
    report = bench.Report()
    report.add("mount", "mount read", 300.0, "MiB/s")
    report.add("reference", "glanceclient", 400.0, "MiB/s")
    report.add("apart", "parts apart", 390.0, "MiB/s")
    report.ratio("apart_ratio", "parts / glanceclient", "apart", "reference")
    report.ratio("mount_ratio", "mount / glanceclient", "mount", "reference", ">= 1",
                 bound="apart_ratio")
    verdict = report.figures[-1].as_json()
    assert verdict["value"] == pytest.approx(0.75)
    assert verdict["bound"] == pytest.approx(0.975)
    assert verdict["result"] == "MISS, BOUND"
