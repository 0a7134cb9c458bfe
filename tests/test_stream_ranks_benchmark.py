"""benchmarks/stream_ranks.py: every run starts with the training file in the same page-cache state."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stream_ranks.py"

pytestmark = pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")


def _load():
    spec = importlib.util.spec_from_file_location("stream_ranks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["stream_ranks"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def written(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    with open(path, "wb") as handle:
        handle.write(b"label,x\n" + b"1,abc\n" * 700_000)  # ~4 MB
        handle.flush()
        os.fsync(handle.fileno())  # clean pages: dropping them is then up to us
    return path


def test_cold_drops_the_files_pages_and_warm_reads_them_all_in(written):
    stream_ranks = _load()
    cold = stream_ranks.set_page_cache(str(written), "cold")
    assert cold["resident_mb_at_start"] == 0.0
    warm = stream_ranks.set_page_cache(str(written), "warm")
    assert warm["resident_mb_before"] == 0.0 and warm["resident_mb_at_start"] == warm["file_mb"]
    assert stream_ranks.set_page_cache(str(written), "as-is")["resident_mb_at_start"] == warm["file_mb"]
