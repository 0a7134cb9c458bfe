"""``deepfm demo``: the whole path (files in, model directory out, metrics, predictions) on built-in data."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.csv as pacsv
from sklearn.metrics import roc_auc_score

from deepfm.api import Estimator
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

DEMO_SPEC = SyntheticSpec(rows=50_000, categorical=8, numeric=3, vocabulary=300, seed=2026)


def write_demo_data(directory: Path, spec: SyntheticSpec = DEMO_SPEC) -> dict[str, object]:
    """Write train/valid/test CSVs; return their paths and the test set's true probabilities."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, object] = {}
    for part, (name, rows) in enumerate((("train", spec.rows), ("valid", spec.rows // 8), ("test", spec.rows // 4))):
        table, probability = make_ctr_table(spec, rows=rows, part=part)
        path = directory / f"{name}.csv"
        pacsv.write_csv(table, path)
        paths[name] = path
        paths[f"{name}_probability"] = probability
        paths[f"{name}_labels"] = table["label"].to_numpy()
    return paths


def run_demo(out: Path | None = None, log: Callable[[str], None] = print, progress: bool = True,
             spec: SyntheticSpec = DEMO_SPEC, **sections) -> dict[str, float]:
    """Train DeepFM on synthetic Criteo-shaped CSVs and compare with the best achievable AUC."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deepfm-demo-") as tmp:
        data = write_demo_data(Path(tmp) / "data", spec)
        kept = out is not None
        out = out or Path(tmp) / "model"
        log(f"data: {spec.rows} train rows, {spec.categorical} categorical + {spec.numeric} numeric columns "
            "(synthetic, Criteo-shaped, with known click probabilities)")
        kinds = {"numeric": [f"I{j + 1}" for j in range(spec.numeric)],  # integer counts: numbers, as --numeric says
                 "categorical": [f"C{f + 1}" for f in range(spec.categorical)]}  # integer ids, as --categorical says
        sections = {**sections, "data": {**kinds, **sections.get("data", {})}}
        estimator = Estimator(**sections).fit(  # the library defaults unless sections say otherwise
            data["train"], valid=data["valid"], out=out, progress=progress, log=log
        )
        reloaded = Estimator.load(out)
        test = reloaded.evaluate(data["test"])
        predictions = reloaded.predict(data["test"])
        oracle = roc_auc_score(data["test_labels"], data["test_probability"])
        assert np.allclose(predictions, estimator.predict(data["test"]), atol=1e-6)
        log(f"predicted {len(predictions):,} test rows with the reloaded model, as the trained one does (first five: "
            + ", ".join(f"{p:.3f}" for p in predictions[:5]) + ")")
        summary = {
            "test_rows": test["rows"],
            "test_auc": round(test["auc"], 4),
            "test_logloss": round(test["logloss"], 4),
            "oracle_auc": round(float(oracle), 4),
            "seconds": round(time.perf_counter() - began, 1),
        }
        log(
            f"test AUC {summary['test_auc']} (best achievable {summary['oracle_auc']}), logloss {summary['test_logloss']}, "
            f"{summary['seconds']} s; model directory: {out}" + ("" if kept else " (temporary: pass --out DIR to keep it)")
        )
        return summary
