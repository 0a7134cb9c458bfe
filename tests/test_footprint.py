"""benchmarks/footprint.py: a fresh process's peak RSS from VmHWM, which counts that process alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FOOTPRINT = Path(__file__).resolve().parents[1] / "benchmarks" / "footprint.py"
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is read from Linux's /proc")


def _load_footprint():
    spec = importlib.util.spec_from_file_location("footprint", FOOTPRINT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_rss_counts_what_the_process_touched():
    footprint = _load_footprint()
    bare = footprint.peak_mb("")
    touched = footprint.peak_mb("held = b\"x\" * (200 * 2**20)")  # written: every page touched
    assert 1 < bare < 200
    assert touched - bare > 190


def test_each_stage_imports_what_the_one_before_did():
    stages = list(_load_footprint().STAGES.values())
    for before, after in zip(stages[1:], stages[2:]):
        assert before.splitlines()[0] in after


def test_the_floor_trains_without_importing_dynamo():
    """torch's floor trains the MLP with deepfm's eager Adam: its process would fail if torch._dynamo were imported
    (as ``torch.optim.Adam``'s first call does), and it holds at least torch."""
    footprint = _load_footprint()
    assert footprint.peak_mb(footprint.EAGER_MLP.format(sizes="8-4-4")) > footprint.peak_mb("")
