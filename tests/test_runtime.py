"""Process-wide settings: threads, denormals and Arrow's allocator."""

import os
import sys

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


@pytest.fixture
def restore_numpy_huge_pages():
    from deepfm.runtime import numpy_huge_pages, set_numpy_huge_pages

    saved = numpy_huge_pages()
    yield
    if saved is not None:
        set_numpy_huge_pages(saved)


@pytest.mark.parametrize("variable, huge_pages", [(None, False), ("0", False), ("1", True)])
def test_configure_asks_numpy_for_no_huge_pages_unless_the_environment_chooses(
        monkeypatch, restore_runtime, restore_numpy_huge_pages, variable, huge_pages):
    """Compacting memory for each huge page at its first touch made a reading pass's large columns slow to fill."""
    from deepfm.runtime import numpy_huge_pages, set_numpy_huge_pages

    if set_numpy_huge_pages(not huge_pages) is None:  # the opposite of what configure should leave
        pytest.skip("this NumPy has no huge-page switch")
    if variable is None:
        monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    else:
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", variable)
    configure(1)
    assert numpy_huge_pages() is huge_pages


def run_python(code: str, env: dict[str, str]) -> list[str]:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()


def environment_without(*names: str) -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in names}


SETTINGS = ("OMP_WAIT_POLICY", "ARROW_DEFAULT_MEMORY_POOL", "NUMPY_MADVISE_HUGEPAGE")


def test_importing_deepfm_loads_nothing_heavy_and_sets_no_environment_variable():
    code = ("import os, sys, deepfm; from deepfm import Estimator, RunConfig; "
            "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('ARROW_DEFAULT_MEMORY_POOL', '-'))")
    assert run_python(code, environment_without(*SETTINGS)) == ["-", "-"]
    assert run_python("import sys, deepfm; print('torch' in sys.modules, 'pyarrow' in sys.modules)",
                      environment_without(*SETTINGS)) == ["False", "False"]


def test_ctrl_c_in_train_is_answered_from_the_file_system_alone(tmp_path):
    """The handler asks the file names whether a checkpoint exists (``deepfm.resumable``), not the model-directory
    module with its torch and safetensors imports: a Ctrl-C early in a run is answered at once."""
    code = ("import sys, deepfm.cli as cli; "
            "cli.COMMANDS['train'] = lambda args: (_ for _ in ()).throw(KeyboardInterrupt()); "
            f"code = cli.main(['train', '--train', 'x.csv', '--out', {str(tmp_path / 'm')!r}]); "
            "print(code, 'deepfm.artifact' in sys.modules, 'deepfm.resumable' in sys.modules)")
    assert run_python(code, environment_without(*SETTINGS))[-3:] == ["130", "False", "True"]


# The command's entry points with ``main`` replaced by a probe: what it sees is what a command sees.
PROBE = ("import os, sys, deepfm.cli as cli; "
         "cli.main = lambda: print(os.environ['OMP_WAIT_POLICY'], os.environ['ARROW_DEFAULT_MEMORY_POOL'], "
         "os.environ['NUMPY_MADVISE_HUGEPAGE'], 'torch' in sys.modules, 'pyarrow' in sys.modules) or 0; ")


@pytest.mark.parametrize("start", ["cli.entry()", "import runpy; runpy.run_module('deepfm', run_name='__main__')"],
                         ids=["console-script", "python-m-deepfm"])
def test_the_command_sets_passive_openmp_waits_the_system_arrow_pool_and_no_numpy_huge_pages_before_torch_loads_unless_chosen(start):
    clean = environment_without(*SETTINGS)
    assert run_python(PROBE + start, clean) == ["PASSIVE", "system", "0", "False", "False"]
    chosen = {**clean, "OMP_WAIT_POLICY": "ACTIVE", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "NUMPY_MADVISE_HUGEPAGE": "1"}
    assert run_python(PROBE + start, chosen) == ["ACTIVE", "jemalloc", "1", "False", "False"]


def test_fit_leaves_the_hosts_threads_denormal_mode_arrow_pool_numpy_huge_pages_and_environment_as_it_found_them(
        monkeypatch, restore_runtime, restore_numpy_huge_pages):
    import os

    from deepfm import Estimator
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
    from deepfm.runtime import flush_denormal_enabled, numpy_huge_pages, set_numpy_huge_pages

    torch.set_num_threads(1)
    torch.set_flush_denormal(False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)  # so that fit turns huge pages off
    has_switch = set_numpy_huge_pages(True) is not None
    environment = {name: os.environ.get(name) for name in SETTINGS}
    table, _ = make_ctr_table(SyntheticSpec(rows=200, categorical=3, numeric=1, vocabulary=20, seed=1))
    Estimator(model={"mlp": (8,)}, training={"epochs": 1, "batch_size": 64, "threads": 2}).fit(table, progress=False)
    assert torch.get_num_threads() == 1
    assert not flush_denormal_enabled()
    assert pa.default_memory_pool().backend_name == "mimalloc"
    assert numpy_huge_pages() is (True if has_switch else None)
    assert {name: os.environ.get(name) for name in SETTINGS} == environment


def test_flush_denormal_enabled_reports_the_mode_torch_set():
    from deepfm.runtime import flush_denormal_enabled

    try:
        torch.set_flush_denormal(True)
        assert flush_denormal_enabled()
        torch.set_flush_denormal(False)
        assert not flush_denormal_enabled()
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_bf16 amx_tile", True),
                                            ("fpu avx2 avx512f", False)])
def test_bf16_math_is_native_only_with_avx512_bf16_or_amx(tmp_path, flags, native):
    from deepfm.runtime import cpu_has_bf16_math

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_bf16_math(str(cpuinfo)) is native
    assert cpu_has_bf16_math(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("native, said", [(False, True), (True, False), (None, False)])
def test_training_in_bf16_says_so_where_the_cpu_would_emulate_it(monkeypatch, restore_runtime, native, said):
    import deepfm.api
    from deepfm import Estimator
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

    monkeypatch.setattr(deepfm.api, "cpu_has_bf16_math", lambda: native)
    table, _ = make_ctr_table(SyntheticSpec(rows=200, categorical=3, numeric=1, vocabulary=20, seed=1))
    logged: list[str] = []
    Estimator(model={"mlp": (8,)}, training={"epochs": 1, "batch_size": 64, "precision": "bf16"}).fit(
        table, progress=False, log=logged.append)
    assert any("emulates bfloat16" in line for line in logged) is said


# A 24 MB block (over glibc's first mmap threshold, 128 KB, under keep_freed_memory's 32 MB) allocated,
# then freed: mallinfo2's bytes in blocks mapped alone (hblkhd) while it lives, and the heaps' bytes (arena)
# once it is freed.
MALLOC_PROBE = ("import ctypes, sys, numpy as np{setup}\n"
                "class Info(ctypes.Structure): _fields_ = [(n, ctypes.c_size_t) for n in "
                "('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
                "info = ctypes.CDLL(None).mallinfo2; info.restype = Info\n"
                "block = np.ones(6_000_000, np.float32); mapped = info().hblkhd >= block.nbytes\n"
                "del block; kept = info().arena >= 24_000_000\n"
                "print('mapped' if mapped else 'heap', 'kept' if kept else 'returned')")


def glibc_has_mallinfo2() -> bool:
    import ctypes
    import sys

    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not glibc_has_mallinfo2(), reason="glibc ≥ 2.33 reports its heaps (mallinfo2)")
def test_the_command_has_malloc_keep_freed_tensors_for_reuse_instead_of_unmapping_them():
    clean = environment_without(*SETTINGS, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")
    assert run_python(MALLOC_PROBE.format(setup=""), clean) == ["mapped", "returned"]  # glibc's default
    command = "; from deepfm.runtime import set_process_environment; set_process_environment()"
    assert run_python(MALLOC_PROBE.format(setup=command), clean) == ["heap", "kept"]
    for chosen in ({"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}):
        assert run_python(MALLOC_PROBE.format(setup=command), {**clean, **chosen}) == ["mapped", "returned"]  # the user's wins
    other_tunable = {**clean, "GLIBC_TUNABLES": "glibc.malloc.tcache_count=8"}
    assert run_python(MALLOC_PROBE.format(setup=command), other_tunable) == ["heap", "kept"]


def test_only_a_torchrun_worker_that_inherited_the_launchers_pid_follows_it():
    """A process that merely inherits DEEPFM_LAUNCHER_PID (not a torchrun worker) neither stops with that process
    nor takes itself for a rank (`DEEPFM_LAUNCHER_PID=1 deepfm --help` ended by SIGTERM, exit 143)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_RESTART_COUNT"} | {"DEEPFM_LAUNCHER_PID": "1"}
    done = subprocess.run([sys.executable, "-m", "deepfm", "--help"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0


def test_numba_caches_written_with_other_options_are_forgotten_once(tmp_path):
    """numba keys its cache by signature and source stamp, not by njit's options (``compiled.CACHE_TAG``)."""
    import importlib.util

    from deepfm import compiled

    (tmp_path / "passes.py").write_text("def twice(x):\n    return 2 * x\n")
    spec = importlib.util.spec_from_file_location("passes_for_the_cache_test", tmp_path / "passes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cache = tmp_path / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "passes.twice-1.py311.nbi").write_bytes(b"stale")
    (cache / "passes.twice-1.py311.1.nbc").write_bytes(b"stale")
    compiled.forget_caches_of_other_options(module.twice)
    assert sorted(p.name for p in cache.iterdir()) == ["deepfm-numba-options.txt"]
    (cache / "passes.twice-1.py311.nbi").write_bytes(b"written with the tag's options")
    compiled._tagged.clear()
    compiled.forget_caches_of_other_options(module.twice)  # tagged: kept
    assert (cache / "passes.twice-1.py311.nbi").exists()


def test_the_first_compiled_pass_leaves_scipy_linalg_unloaded_and_a_compiled_dot_still_uses_blas():
    """numba's CPU target imports ``scipy.linalg`` as it loads, to check for BLAS (~0.15 s of the first batch);
    ``compiled.defer_blas_check`` leaves that to the first pass that calls BLAS."""
    code = ("import sys, numpy as np; from deepfm.compiled import compiled\n"
            "total = compiled(lambda a: a.sum()); dot = compiled(lambda a, b: np.dot(a, b))\n"
            "print(total(np.arange(4.0)), 'scipy.linalg' in sys.modules)\n"
            "import numba.np.arraymath as arraymath; print(arraymath._HAVE_BLAS)\n"
            "print(dot(np.arange(3.0), np.arange(3.0)), 'scipy.linalg' in sys.modules)")
    assert run_python(code, environment_without()) == ["6.0", "False", "True", "5.0", "True"]


def test_fit_has_the_garbage_collector_skip_the_objects_alive_before_it_and_hands_them_back_after(monkeypatch):
    """Full collections over the ~190k objects of torch, pyarrow and deepfm took 0.12-0.17 s each in the first
    batch (``earlier_objects_frozen``)."""
    import gc

    from deepfm import Estimator
    from deepfm.api import Estimator as EstimatorClass
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

    frozen_while_reading = []
    read = EstimatorClass._training_data

    def reading(self, *args, **kwargs):
        frozen_while_reading.append(gc.get_freeze_count())
        return read(self, *args, **kwargs)

    monkeypatch.setattr(EstimatorClass, "_training_data", reading)
    table, _ = make_ctr_table(SyntheticSpec(rows=200, categorical=3, numeric=1, vocabulary=20, seed=1))
    assert gc.get_freeze_count() == 0
    Estimator(model={"mlp": (8,)}, training={"epochs": 1, "batch_size": 64}).fit(table, progress=False)
    assert frozen_while_reading[0] > 1000
    assert gc.get_freeze_count() == 0


def test_fit_leaves_objects_a_host_froze_itself_frozen():
    import gc

    from deepfm import Estimator
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

    table, _ = make_ctr_table(SyntheticSpec(rows=200, categorical=3, numeric=1, vocabulary=20, seed=1))
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        Estimator(model={"mlp": (8,)}, training={"epochs": 1, "batch_size": 64}).fit(table, progress=False)
        assert gc.get_freeze_count() >= frozen * 0.9  # (some frozen objects may be freed meanwhile, by reference counts)
    finally:
        gc.unfreeze()


def test_a_freeze_the_host_makes_while_a_fit_runs_outlasts_the_fit(monkeypatch):
    """A host thread that calls ``gc.freeze`` while a fit runs in another (a server before it forks its workers)
    finds its objects still frozen after the fit: they include every object the fit froze."""
    import gc

    from deepfm import Estimator
    from deepfm.api import Estimator as EstimatorClass
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

    read = EstimatorClass._training_data

    def reading_while_the_host_freezes(self, *args, **kwargs):
        gc.freeze()  # as the host's other thread would, meanwhile
        return read(self, *args, **kwargs)

    monkeypatch.setattr(EstimatorClass, "_training_data", reading_while_the_host_freezes)
    table, _ = make_ctr_table(SyntheticSpec(rows=200, categorical=3, numeric=1, vocabulary=20, seed=1))
    try:
        Estimator(model={"mlp": (8,)}, training={"epochs": 1, "batch_size": 64}).fit(table, progress=False)
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/status"), reason="fork and Linux's /proc")
def test_peak_rss_is_the_programs_own_not_the_peak_of_the_process_it_was_forked_from():
    """torchrun forks and execs each rank: ru_maxrss started a rank at torchrun's peak (its metrics said 1,156 MB where
    the same training alone peaked at 566 MB)."""
    import resource

    held = bytearray(300 << 20)  # this process's peak: at least 300 MB more than a fresh interpreter's
    held[:: 4096] = b"x" * len(held[:: 4096])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 300
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # as a launcher starts a rank: fork, then exec a new program
        os.dup2(write, 1)
        os.execv(sys.executable, [sys.executable, "-c", "from deepfm.runtime import peak_rss_mb; print(peak_rss_mb())"])
    os.close(write)
    with os.fdopen(read) as out:
        said = out.read()
    _, status = os.waitpid(child, 0)
    del held
    assert os.waitstatus_to_exitcode(status) == 0 and 0 < float(said) < 150, said


def test_fits_that_overlap_in_threads_leave_the_settings_the_first_found(restore_runtime):
    """The first fit to end set back the thread count it found; a second, begun once the first had set its own,
    then set back that one: two fits of a threaded search left the host at one thread (and in between, the second's
    later steps ran on the caller's count, summing in another order)."""
    import torch

    from deepfm.runtime import preserved

    torch.set_num_threads(2)
    first, second = preserved(), preserved()
    first.__enter__()
    torch.set_num_threads(1)  # the first fit's own
    second.__enter__()
    first.__exit__(None, None, None)
    assert torch.get_num_threads() == 1  # the second fit runs on with its settings
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == 2
