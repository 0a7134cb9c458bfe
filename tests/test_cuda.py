"""On a GPU, what a GPU user runs: ``deepfm train`` at its defaults (``--device auto`` is cuda there), the
scoring, multi-valued fields, a streamed run resumed from its checkpoint, FM. Skipped where torch has no CUDA;
``benchmarks/gpu_check.sh`` runs them on a CUDA machine."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

from deepfm.api import Estimator
from deepfm.cli import main
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.training.trainer import predict

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# 26 categorical and 13 numeric columns with a long tail of ids: the shape whose batches take the distinct-id
# lookups, the row-wise Adam and the per-occurrence L2 that deepfm's defaults use on the Criteo data
SPEC = SyntheticSpec(rows=40_000, categorical=26, numeric=13, vocabulary=400_000, seed=3)
NUMERIC = [f"I{i}" for i in range(1, 14)]


@pytest.fixture(scope="module")
def criteo_like(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("criteo_like")
    paths = {}
    for name, part, rows in (("train", 0, SPEC.rows), ("test", 2, 10_000)):
        table, _ = make_ctr_table(SPEC, rows=rows, part=part)
        paths[name] = folder / f"{name}.csv"
        pacsv.write_csv(table, paths[name])
    return paths


def evaluate_json(model, test, capsys) -> dict:
    assert main(["evaluate", str(model), str(test), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_at_the_defaults_runs_on_the_gpu_and_learns_what_the_cpu_learns(criteo_like, tmp_path, capsys, precision):
    common = ["--train", str(criteo_like["train"]), "--numeric", ",".join(NUMERIC),
              "--epochs", "2", "--quiet", "--json", "--precision", precision]
    assert main(["train", *common, "--out", str(tmp_path / "gpu")]) == 0  # --device auto: cuda
    capsys.readouterr()
    assert json.loads((tmp_path / "gpu" / "config.json").read_text())["run"]["training"]["device"].startswith("cuda")
    assert main(["train", *common, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    capsys.readouterr()
    gpu, cpu = (evaluate_json(tmp_path / name, criteo_like["test"], capsys) for name in ("gpu", "cpu"))
    assert gpu["rows"] == cpu["rows"] == 10_000
    assert gpu["auc"] > 0.6 and abs(gpu["auc"] - cpu["auc"]) < 0.02, (gpu, cpu)


def test_scoring_sends_the_batches_where_the_model_is_and_the_model_loads_without_a_gpu(criteo_like, tmp_path,
                                                                                        monkeypatch):
    estimator = Estimator(data={"numeric": NUMERIC, "valid_fraction": 0},
                          training={"epochs": 1, "device": "cuda"}).fit(criteo_like["train"], out=tmp_path / "m",
                                                                        progress=False)
    test = estimator.encode(criteo_like["test"])
    assert next(estimator.model.parameters()).is_cuda
    on_gpu = estimator.predict(criteo_like["test"])
    np.testing.assert_allclose(predict(estimator.model, estimator.encoder.task, test), on_gpu, rtol=0, atol=1e-6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the model directory on a machine without one
    on_cpu = Estimator.load(tmp_path / "m")
    assert next(on_cpu.model.parameters()).device.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict(criteo_like["test"]), on_gpu, rtol=0, atol=1e-4)


def test_a_training_step_at_the_defaults_never_makes_the_host_wait_for_the_gpu(criteo_like):
    """Steps taken with torch reporting every operation that waits for the GPU: none may (the loss is read every
    few steps, outside ``_step``). The batches are made beforehand, as the prefetch thread makes them: finding a
    GPU batch's distinct ids waits for the GPU there (the number of distinct ids sizes the tensors)."""
    import warnings

    from deepfm.training.trainer import Trainer

    estimator = Estimator(data={"numeric": NUMERIC, "valid_fraction": 0},
                          training={"epochs": 1, "device": "cuda"}).fit(criteo_like["train"], progress=False)
    data = estimator.encode(criteo_like["train"])
    trainer = Trainer(estimator.model, estimator.encoder.task, estimator.config.training, progress=False)
    size = estimator.config.training.batch_size
    batches = [data.slice(start, start + size).to_batch("cuda").prepare() for start in range(0, 4 * size, size)]
    trainer._step(batches[0])  # first calls (e.g. the optimisers' state)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for batch in batches[1:]:
                trainer._step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    waits = [f"{w.filename}:{w.lineno} {str(w.message)[:80]}" for w in caught
             if "called a synchronizing CUDA operation" in str(w.message)]
    assert not waits, "\n".join([*waits, *(f"(also: {w.filename}:{w.lineno} {w.message})" for w in caught)])


def test_a_multi_valued_field_trains_on_the_gpu(write_table, tmp_path, capsys):
    rows = 2_000
    path = write_table("train.csv", {
        "label": [i % 2 for i in range(rows)],
        "tags": ["a|b:0.5" if i % 2 else ("c" if i % 3 else None) for i in range(rows)],
        "city": [f"c{(i // 2) % 40}" for i in range(rows)],  # both labels in every city: only the tags tell them
    })
    assert main(["train", "--train", str(path), "--out", str(tmp_path / "model"), "--multi", "tags", "--epochs", "2",
                 "--device", "cuda", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] > 0
    assert evaluate_json(tmp_path / "model", path, capsys)["auc"] > 0.9  # the label is the tags' parity


def test_a_streamed_run_interrupted_on_the_gpu_resumes_from_its_checkpoint(criteo_like, tmp_path, monkeypatch):
    from deepfm.training.trainer import Trainer

    config = {"data": {"numeric": NUMERIC, "stream": "on", "chunk_rows": 5_000,
                       "shuffle_window": 2, "valid_fraction": 0},
              "training": {"epochs": 2, "batch_size": 1024, "checkpoint_every": 10, "device": "cuda"}}
    full = Estimator(**config).fit(criteo_like["train"], out=tmp_path / "full", progress=False)
    original_step, calls = Trainer._step, {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] > 55:  # epoch 2 (40 steps an epoch), after its checkpoint at step 10
            raise KeyboardInterrupt
        return original_step(self, batch)

    monkeypatch.setattr(Trainer, "_step", crash)
    with pytest.raises(KeyboardInterrupt):
        Estimator(**config).fit(criteo_like["train"], out=tmp_path / "cut", progress=False)
    monkeypatch.setattr(Trainer, "_step", original_step)
    resumed = Estimator(**config).fit(criteo_like["train"], out=tmp_path / "cut", resume=True, progress=False)
    assert resumed.result.samples_seen == full.result.samples_seen == 2 * SPEC.rows
    assert next(resumed.model.parameters()).is_cuda
    # GPU scatter-adds are not bit-reproducible: the same run, not the same bits
    full_auc, resumed_auc = (e.evaluate(criteo_like["test"])["auc"] for e in (full, resumed))
    assert abs(full_auc - resumed_auc) < 0.01, (full_auc, resumed_auc)


def test_fm_trains_on_the_gpu_and_its_model_loads_there(criteo_like, tmp_path, capsys):
    assert main(["train", "--train", str(criteo_like["train"]), "--out", str(tmp_path / "fm"), "--model", "fm",
                 "--epochs", "2", "--device", "cuda", "--quiet"]) == 0
    capsys.readouterr()
    loaded = Estimator.load(tmp_path / "fm")
    assert next(loaded.model.parameters()).is_cuda
    assert loaded.evaluate(criteo_like["test"])["auc"] > 0.6
