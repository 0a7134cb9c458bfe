"""Process-wide settings: threads, denormals and Arrow's allocator."""

import pyarrow as pa
import pytest
import torch

from deepfm.runtime import configure


@pytest.fixture
def restore_runtime():
    pool, threads = pa.default_memory_pool(), torch.get_num_threads()
    yield
    pa.set_memory_pool(pool)
    torch.set_num_threads(threads)


def test_configure_sets_threads_and_the_system_allocator(monkeypatch, restore_runtime):
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())  # as if pyarrow had been loaded before deepfm
    configure(1)
    assert torch.get_num_threads() == 1
    assert pa.default_memory_pool().backend_name == "system"


def test_configure_keeps_an_arrow_pool_the_user_chose(monkeypatch, restore_runtime):
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    configure(1)
    assert pa.default_memory_pool().backend_name == "mimalloc"


def test_importing_deepfm_sets_passive_openmp_waits_and_the_system_arrow_pool_unless_chosen():
    import os
    import subprocess
    import sys

    code = "import os, deepfm; print(os.environ['OMP_WAIT_POLICY'], os.environ['ARROW_DEFAULT_MEMORY_POOL'])"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "ARROW_DEFAULT_MEMORY_POOL")}
    run = lambda env: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert run(clean) == ["PASSIVE", "system"]
    assert run({**clean, "OMP_WAIT_POLICY": "ACTIVE", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}) == ["ACTIVE", "jemalloc"]
