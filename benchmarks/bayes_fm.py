"""Bayesian FM by Gibbs sampling: deepfm's sampler (``deepfm.solvers.gibbs``) against myFM on the same
design matrices and sweeps.

deepfm's reader and encoder build each design matrix (``design_of_data``); the matrices go to an
``.npz`` that the myFM run (its own venv, ``benchmarks/.myfm-venv``, which never imports deepfm) reads.

    python3 -m venv benchmarks/.myfm-venv && benchmarks/.myfm-venv/bin/pip install myfm
    PYTHONPATH=src .venv/bin/python benchmarks/bayes_fm.py --datasets /work/shared/datasets \
        --out benchmarks/results/bayes_fm.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse

HERE = Path(__file__).resolve().parent
MYFM_PYTHON = HERE / ".myfm-venv" / "bin" / "python"
CASES = ("ml100k-ids", "ml100k-side", "frappe-binary", "ml100k-ordinal")


# -- data, with deepfm's reader and encoder (deepfm's interpreter only) ----------------------------

def movielens_tables(root: Path, side: bool):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    ratings = ["user", "item", "label", "time"]
    read = lambda name, names, sep: pcsv.read_csv(  # noqa: E731
        root / name, read_options=pcsv.ReadOptions(column_names=names, encoding="latin1"),
        parse_options=pcsv.ParseOptions(delimiter=sep, quote_char=False),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names if n != "label"}))
    base, test = (read(f"u1.{part}", ratings, "\t").drop_columns(["time"]) for part in ("base", "test"))
    if not side:
        return base, test
    users = read("u.user", ["user", "age", "gender", "occupation", "zip"], "|")
    genre_names = [line.split("|")[0] for line in (root / "u.genre").read_text().splitlines() if line]
    items = read("u.item", ["item", "title", "date", "video", "url", *genre_names], "|")
    flags = np.stack([items[g].to_numpy(zero_copy_only=False) == "1" for g in genre_names], axis=1)
    genres = pa.array(["|".join(g for g, on in zip(genre_names, row) if on) for row in flags])
    items = pa.table({"item": items["item"], "genres": genres})

    def joined(table):
        return table.join(users, "user").join(items, "item").select(
            ["user", "item", "age", "gender", "occupation", "zip", "genres", "label"])
    return joined(base), joined(test)


def frappe_tables(root: Path):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    def read(name):
        table = pcsv.read_csv(root / name)
        return table.select([c for c in table.column_names if c != "label"] + ["label"]).cast(
            pa.schema([(c, pa.string() if c != "label" else pa.float64()) for c in table.column_names if c != "label"]
                      + [("label", pa.float64())]))
    return read("train.csv"), read("test.csv")


def encoded_case(case: str, datasets: Path) -> dict[str, np.ndarray]:
    """The case's train/test design matrices (deepfm's encoder fitted on train) and one group per field."""
    from deepfm.api import Estimator
    from deepfm.data.design import design_of_data
    from deepfm.data.encoders import FeatureEncoder

    if case.startswith("ml100k"):
        train, test = movielens_tables(datasets / "movielens-100k", side=case == "ml100k-side")
        multi = ("genres",) if case == "ml100k-side" else ()
        task = "regression"
    else:
        train, test = frappe_tables(datasets / "frappe")
        multi, task = (), "binary"
    fields = [c for c in train.column_names if c != "label"]
    estimator = Estimator(data={"categorical": [f for f in fields if f not in multi], "multi": list(multi),
                                "task": task})
    train_frame = estimator.read(train)
    encoder = FeatureEncoder.fit([train_frame], estimator.config.data)
    estimator.encoder = encoder
    train_data, test_data = encoder.transform(train_frame), estimator.encode(test)
    groups = np.zeros(encoder.num_features, dtype=np.int64)
    for index, spec in enumerate(encoder.fields):
        groups[spec.offset : spec.offset + spec.size] = index
    x_train, x_test = (design_of_data(d, encoder.num_features) for d in (train_data, test_data))
    return {"train": x_train, "test": x_test, "y_train": train_data.labels.astype(np.float64),
            "y_test": test_data.labels.astype(np.float64), "groups": groups}


def save_case(path: Path, case: dict) -> None:
    arrays = {"groups": case["groups"], "y_train": case["y_train"], "y_test": case["y_test"]}
    for part in ("train", "test"):
        x = case[part]
        arrays.update({f"{part}_data": x.data, f"{part}_indices": x.indices, f"{part}_indptr": x.indptr,
                       f"{part}_shape": np.array(x.shape)})
    np.savez(path, **arrays)


def load_case(path: Path) -> dict:
    arrays = np.load(path)
    case = {k: arrays[k] for k in ("groups", "y_train", "y_test")}
    for part in ("train", "test"):
        case[part] = scipy.sparse.csr_matrix(
            (arrays[f"{part}_data"], arrays[f"{part}_indices"], arrays[f"{part}_indptr"]), shape=tuple(arrays[f"{part}_shape"]))
    return case


# -- metrics (both interpreters) ------------------------------------------------------------------

def scores(kind: str, y: np.ndarray, prediction: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    if kind == "binary":
        from sklearn.metrics import log_loss, roc_auc_score

        return {"auc": round(float(roc_auc_score(y, prediction)), 4),
                "logloss": round(float(log_loss(y, np.clip(prediction, 1e-7, 1 - 1e-7))), 4)}
    result = {"rmse": round(float(np.sqrt(np.mean(np.square(prediction - y)))), 4)}
    if probabilities is not None:
        result["accuracy"] = round(float(np.mean(np.argmax(probabilities, axis=1) + 1 == y)), 4)
    return result


def kind_of(case: str) -> str:
    return {"frappe-binary": "binary", "ml100k-ordinal": "ordinal"}.get(case, "regression")


# -- the two samplers -----------------------------------------------------------------------------

def run_deepfm(case_name: str, case: dict, rank: int, sweeps: int, burn_in: int, seed: int) -> dict:
    from deepfm.solvers.gibbs import GibbsFM

    kind = kind_of(case_name)
    began, cpu = time.perf_counter(), time.process_time()
    model = GibbsFM(rank=rank, groups=case["groups"], seed=seed).fit(case["train"], case["y_train"], kind, sweeps, burn_in)
    fit_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu
    prediction = model.predict(case["test"])
    probabilities = model.class_probabilities(case["test"]) if kind == "ordinal" else None
    return {"fit_s": round(fit_s, 2), "cpu_s": round(cpu_s, 2), **scores(kind, case["y_test"], prediction, probabilities)}


def run_myfm(case_name: str, case: dict, rank: int, sweeps: int, burn_in: int, seed: int) -> dict:
    import myfm

    kind = kind_of(case_name)
    model_class = {"regression": myfm.MyFMRegressor, "binary": myfm.MyFMClassifier,
                   "ordinal": myfm.MyFMOrderedProbit}[kind]
    model = model_class(rank=rank, random_seed=seed)
    y = case["y_train"] - 1 if kind == "ordinal" else case["y_train"]
    began, cpu = time.perf_counter(), time.process_time()
    model.fit(case["train"], y.astype(np.int64) if kind == "ordinal" else y, n_iter=sweeps,
              n_kept_samples=sweeps - burn_in, grouping=[int(g) for g in case["groups"]])
    fit_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu
    probabilities = None
    if kind == "ordinal":
        probabilities = model.predict_proba(case["test"])
        prediction = probabilities @ np.arange(1, probabilities.shape[1] + 1)
    elif kind == "binary":
        prediction = model.predict_proba(case["test"])
    else:
        prediction = model.predict(case["test"])
    return {"fit_s": round(fit_s, 2), "cpu_s": round(cpu_s, 2), **scores(kind, case["y_test"], prediction, probabilities)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path("/work/shared/datasets"))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--sweeps", type=int, default=200)
    parser.add_argument("--burn-in", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-myfm", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--peer-case", type=Path, help=argparse.SUPPRESS)  # internal: the myFM side
    parser.add_argument("--peer-name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_case:
        result = run_myfm(args.peer_name, load_case(args.peer_case), args.rank, args.sweeps, args.burn_in, args.seed)
        print(json.dumps(result))
        return
    cache = HERE / ".data"
    cache.mkdir(exist_ok=True)
    results = {"settings": {"rank": args.rank, "sweeps": args.sweeps, "burn_in": args.burn_in, "seed": args.seed},
               "load_average_at_start": list(os.getloadavg()), "cases": {}}
    for name in args.cases:
        case = encoded_case("ml100k-ids" if name == "ml100k-ordinal" else name, args.datasets)
        row = {"deepfm": run_deepfm(name, case, args.rank, args.sweeps, args.burn_in, args.seed)}
        if not args.skip_myfm:
            path = cache / f"bayes_fm_{name}.npz"
            save_case(path, case)
            done = subprocess.run([str(MYFM_PYTHON), __file__, "--peer-case", str(path), "--peer-name", name,
                                   "--rank", str(args.rank), "--sweeps", str(args.sweeps), "--burn-in",
                                   str(args.burn_in), "--seed", str(args.seed)],
                                  capture_output=True, text=True, check=True)
            row["myfm"] = json.loads(done.stdout.strip().splitlines()[-1])
            row["wall_ratio"] = round(row["deepfm"]["fit_s"] / row["myfm"]["fit_s"], 2)
            row["cpu_ratio"] = round(row["deepfm"]["cpu_s"] / row["myfm"]["cpu_s"], 2)
        results["cases"][name] = row
        print(name, json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
