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
