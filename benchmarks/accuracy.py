"""The accuracy suite: every model with defaults × every shared data set, test metrics beside references.

    python benchmarks/accuracy.py --datasets /work/shared/datasets [--only frappe ml100k] [--models lr,fm,deepfm]
        [--set training.embed_l2=0.01 ...] [--validation-only] [--out benchmarks/results/accuracy_DATE]
    python benchmarks/accuracy.py --candidates CANDIDATES.json --only frappe ml100k-ids --models fm   # validation only
    python benchmarks/accuracy.py --only frappe --models fm,deepfm --seeds 2026 7 11 13 17            # mean ± sd over seeds
    python benchmarks/accuracy.py --candidates C.json --only frappe ipinyou --train-rows 15000 30000  # small samples

Each (model, data set) trains at the library's defaults (``--set`` overrides them, for candidate
sweeps) with early stopping on the validation split, then scores the test split once, for the
report. ``--validation-only`` never reads a test split: that is how candidates are compared.
``--candidates FILE`` (JSON: name -> {section: {key: value}}) runs every candidate on every data set,
validation only, and tabulates candidate × data set. ``--seeds S ...`` runs each (model, data set)
once per ``training.seed`` and adds mean ± sd; a test AUC carries its DeLong standard error (``auc_se``,
benchmarks/accuracy_stats.py). ``--train-rows N ...`` runs each data set again on a seeded sample of N of its
training rows (in their order; the same valid and test), as ``NAME@N``: the samples a new user tries. Writes OUT.json (every run) and OUT.md (the table) and prints the table.

Splits (fixed, seeded; nothing random between runs):
- frappe: the shared train/valid/test files.
- ml100k-ids / ml100k-side: GroupLens u1.base / u1.test; valid = every 10th row of u1.base (rows 9, 19, ...).
  ``-side`` adds age, gender, occupation, zip (u.user) and the genres (u.item, a multi-valued field).
- ml1m: the 100k-rating sample joined with users.dat and movies.dat (genres multi-valued);
  numpy.random.default_rng(2026).permutation, first 80% train, next 10% valid, last 10% test.
- ml100k-clicks / ml1m-clicks: ml100k-side / ml1m binarised as the CTR literature does (AutoInt, AFN):
  rating >= 4 -> 1, rating <= 2 -> 0, rating 3 dropped. The splits are those of ml100k-side and ml1m
  (the same rows, the same order, the same features), each with its 3s removed afterwards, so valid is
  every 10th row of u1.base (resp. the same 10% of the permutation) less its 3s.
- adult: the same permutation scheme over the 48,842 rows (80/10/10); label ``income`` (>50K = 1);
  age, fnlwgt, educational-num, capital-gain, capital-loss, hours-per-week numeric.
- ipinyou: the shared train/test CSVs; valid = 10% of train by default_rng(2026).permutation.
- criteo-synth: benchmarks/make_data.py's 1M-row train and 100k-row test (13 numeric + 26
  categorical fields) and a 100k-row valid (part 2 of the same hidden model), 3 epochs; the
  Bayes AUC is the AUC of the true click probabilities on the test rows. ``criteo-synth-200k``: its
  first 200k training rows (the same valid and test), for sweeps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 2026


@dataclass
class Suite:
    """One data set's splits, how to read them, its metric and the reference figures on the same split."""

    train: Any
    valid: Any
    test: Any
    data: dict[str, Any]
    metric: str  # auc (higher is better) or rmse
    references: dict[str, str] = field(default_factory=dict)  # model -> text
    training: dict[str, Any] = field(default_factory=dict)  # fixed by the suite (e.g. 3 epochs on criteo-synth)
    notes: dict[str, Any] = field(default_factory=dict)


# -- data sets ------------------------------------------------------------------------------------


def _split(table: pa.Table, shares: tuple[float, float]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(train, valid, test) by ``default_rng(2026).permutation``: the first ``shares[0]`` train, the next ``shares[1]`` valid."""
    order = np.random.default_rng(SEED).permutation(table.num_rows)
    a, b = int(table.num_rows * shares[0]), int(table.num_rows * (shares[0] + shares[1]))
    return table.take(order[:a]), table.take(order[a:b]), table.take(order[b:])


def _as_strings(table: pa.Table, columns: list[str]) -> pa.Table:
    for name in columns:
        table = table.set_column(table.schema.get_field_index(name), name, pc.cast(table[name], pa.string()))
    return table


def _read_delimited(path: Path, names: list[str], delimiter: str, encoding: str = "utf8") -> pa.Table:
    """A headerless file; ``::`` (MovieLens-1M) is read as one-character ``:`` with empty columns dropped."""
    if delimiter == "::":
        text = path.read_text(encoding=encoding).replace("::", "\x01")
        return pacsv.read_csv(pa.BufferReader(text.encode()), pacsv.ReadOptions(column_names=names),
                              pacsv.ParseOptions(delimiter="\x01", quote_char=False),
                              pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
    return pacsv.read_csv(path, pacsv.ReadOptions(column_names=names, encoding=encoding),
                          pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
                          pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))


def frappe(root: Path) -> Suite:
    d = root / "frappe"
    return Suite(d / "train.libfm", d / "valid.libfm", d / "test.libfm", {"format": "libfm"}, "auc", {
        "fm": "AUC 0.9521 (independent PyTorch FM, k 64, AdaGrad lr 0.1, L2 1e-2 per occurrence); myFM 0.9494 / logloss 0.250",
        "deepfm": "AUC 0.9537 (independent PyTorch DeepFM, same recipe)"})


def _ml100k_ratings(root: Path, name: str) -> pa.Table:
    table = _read_delimited(root / "movielens-100k" / name, ["user", "item", "label", "time"], "\t")
    return table.drop(["time"]).set_column(2, "label", pc.cast(table["label"], pa.float64()))


def _every_tenth(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    rows = np.arange(table.num_rows)
    return table.filter(pa.array(rows % 10 != 9)), table.filter(pa.array(rows % 10 == 9))


def _ml100k_side(root: Path) -> tuple[pa.Table, pa.Table]:
    d = root / "movielens-100k"
    users = _read_delimited(d / "u.user", ["user", "age", "gender", "occupation", "zip"], "|")
    genre_names = [line.split("|")[0] for line in (d / "u.genre").read_text().splitlines() if line.strip()]
    item_names = ["item", "title", "date", "video", "url", *genre_names]
    items = _read_delimited(d / "u.item", item_names, "|", encoding="latin-1")
    flags = np.stack([np.asarray(items[g].to_pylist()) == "1" for g in genre_names], axis=1)
    genres = ["|".join(g for g, on in zip(genre_names, row) if on) for row in flags]
    return users, pa.table({"item": items["item"], "genres": pa.array(genres)})


def ml100k(root: Path, side: bool) -> Suite:
    base, test = _ml100k_ratings(root, "u1.base"), _ml100k_ratings(root, "u1.test")
    data: dict[str, Any] = {"task": "regression", "categorical": ["user", "item"]}
    if side:
        users, items = _ml100k_side(root)
        base, test = (t.join(users, "user").join(items, "item") for t in (base, _ml100k_ratings(root, "u1.test")))
        data = {"task": "regression", "categorical": ["user", "item", "age", "gender", "occupation", "zip"],
                "multi": ["genres"]}
        base = base.sort_by([("user", "ascending"), ("item", "ascending")])  # joins reorder rows: fix an order
        test = test.sort_by([("user", "ascending"), ("item", "ascending")])
    train, valid = _every_tenth(base)
    reference = ("RMSE 0.901 (myFM, user/item side features, all of u1.base)" if side
                 else "RMSE 0.909 (myFM k 10, 200 sweeps, all of u1.base)")
    return Suite(train, valid, test, data, "rmse", {"fm": reference})


def ml1m(root: Path) -> Suite:
    d = root / "movielens-1m"
    ratings = _read_delimited(d / "ratings_sample_100k.dat", ["user", "item", "label", "time"], "::")
    ratings = ratings.drop(["time"]).set_column(2, "label", pc.cast(ratings["label"], pa.float64()))
    users = _read_delimited(d / "users.dat", ["user", "gender", "age", "occupation", "zip"], "::")
    movies = _read_delimited(d / "movies.dat", ["item", "title", "genres"], "::", encoding="latin-1").drop(["title"])
    table = ratings.append_column("row", pa.array(np.arange(ratings.num_rows)))
    table = table.join(users, "user").join(movies, "item").sort_by("row").drop(["row"])
    train, valid, test = _split(table, (0.8, 0.1))
    return Suite(train, valid, test, {"task": "regression", "categorical": ["user", "item", "gender", "age", "occupation", "zip"],
                                      "multi": ["genres"]}, "rmse",
                 {"lr": "RMSE 0.951 (issue 12, old defaults)", "fm": "RMSE 0.970 (issue 12, old defaults)",
                  "deepfm": "RMSE 0.948 (issue 12, old defaults)"})


CLICK_FROM_RATING = 4  # a rating of at least this is a click (1)
NO_CLICK_UP_TO_RATING = 2  # a rating of at most this is no click (0); the ratings between are dropped


def as_clicks(table: pa.Table) -> pa.Table:
    """A ratings table as clicks: label 1 for a rating >= 4, 0 for <= 2, the rows rated 3 dropped."""
    rating = table["label"]
    kept = table.filter(pc.or_(pc.greater_equal(rating, CLICK_FROM_RATING), pc.less_equal(rating, NO_CLICK_UP_TO_RATING)))
    clicked = pc.cast(pc.greater_equal(kept["label"], CLICK_FROM_RATING), pa.int64())
    return kept.set_column(kept.schema.get_field_index("label"), "label", clicked)


def clicks(ratings: Suite) -> Suite:
    """A ratings suite as a click suite (``as_clicks`` on each split, the same features), AUC its metric."""
    train, valid, test = (as_clicks(split) for split in (ratings.train, ratings.valid, ratings.test))
    return Suite(train, valid, test, ratings.data | {"task": "binary"}, "auc")


ADULT_NUMERIC = ["age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week"]


def adult(root: Path) -> Suite:
    table = pacsv.read_csv(root / "adult" / "adult.csv")
    table = table.rename_columns(["label" if n == "income" else n for n in table.column_names])
    categorical = [n for n in table.column_names if n not in ADULT_NUMERIC and n != "label"]
    table = _as_strings(table, categorical)
    for name in ADULT_NUMERIC:
        table = table.set_column(table.schema.get_field_index(name), name, pc.cast(table[name], pa.float64()))
    train, valid, test = _split(table, (0.8, 0.1))
    return Suite(train, valid, test, {"positive": ">50K", "categorical": categorical, "numeric": ADULT_NUMERIC}, "auc",
                 {"deepfm": "AUC 0.923 with a validation split, 0.878 without (issue 12, another split)"})


def ipinyou(root: Path) -> Suite:
    d = root / "ipinyou"
    header = (d / "train.csv").open().readline().strip().split(",")
    options = pacsv.ConvertOptions(column_types={n: pa.string() for n in header}, strings_can_be_null=False,
                                   null_values=[])
    train = pacsv.read_csv(d / "train.csv", convert_options=options)
    test = pacsv.read_csv(d / "test.csv", convert_options=options)
    fields = [n for n in header if n != "label"]
    order = np.random.default_rng(SEED).permutation(train.num_rows)
    cut = train.num_rows - train.num_rows // 10
    return Suite(train.take(order[:cut]), train.take(order[cut:]), test, {"task": "binary", "categorical": fields}, "auc")


def criteo_synth(root: Path) -> Suite:
    sys.path.insert(0, str(HERE))
    from make_data import DEFAULT_DIR, criteo_spec, make_data, write_split

    from deepfm.data.synthetic import make_ctr_table
    from sklearn.metrics import roc_auc_score

    train, test = make_data(DEFAULT_DIR)
    valid = write_split(DEFAULT_DIR, "valid", 100_000, 2, False, criteo_spec())
    test_table, probability = make_ctr_table(criteo_spec(), rows=100_000, part=1)
    bayes = float(roc_auc_score(test_table["label"].to_numpy(), probability))
    numeric = [f"I{i}" for i in range(1, 14)]
    return Suite(train, valid, test, {"numeric": numeric, "categorical": [f"C{i}" for i in range(1, 27)]}, "auc",
                 {"deepfm": "AUC 0.716 after 3 epochs (independent PyTorch DeepFM on a private set of this shape; "
                            "DeepCTR-Torch 0.685 there)"},
                 training={"epochs": 3}, notes={"bayes_auc": bayes, "data_dir": str(DEFAULT_DIR)})


CRITEO_SWEEP_ROWS = 200_000


def criteo_synth_sweep(root: Path) -> Suite:
    """criteo-synth on the first 200k training rows (same valid and test): the sweeps' cheaper stand-in."""
    suite = criteo_synth(root)
    train = pacsv.read_csv(suite.train, convert_options=pacsv.ConvertOptions(
        column_types={name: pa.string() for name in suite.data["categorical"]})).slice(0, CRITEO_SWEEP_ROWS)
    return Suite(train, suite.valid, suite.test, suite.data, suite.metric, training=suite.training,
                 notes=suite.notes | {"train_rows": CRITEO_SWEEP_ROWS})


DATASETS: dict[str, Callable[[Path], Suite]] = {
    "frappe": frappe,
    "ml100k-ids": lambda root: ml100k(root, side=False),
    "ml100k-side": lambda root: ml100k(root, side=True),
    "ml1m": ml1m,
    "ml100k-clicks": lambda root: clicks(ml100k(root, side=True)),
    "ml1m-clicks": lambda root: clicks(ml1m(root)),
    "adult": adult,
    "ipinyou": ipinyou,
    "criteo-synth": criteo_synth,
    "criteo-synth-200k": criteo_synth_sweep,
}


def sampled(suite: Suite, rows: int, folder: Path) -> Suite | None:
    """``suite`` with ``rows`` of its training rows, drawn by ``default_rng(SEED)`` and kept in their order;
    None where it has no more than ``rows``."""
    train = suite.train
    if isinstance(train, pa.Table):
        total = train.num_rows
    elif Path(train).suffix == ".libfm":
        lines = Path(train).read_text().splitlines(keepends=True)
        total = len(lines)
    else:  # a CSV with a header
        train = pacsv.read_csv(train, convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in suite.data.get("categorical", [])}))
        total = train.num_rows
    if rows >= total:
        return None
    kept = np.sort(np.random.default_rng(SEED).permutation(total)[:rows])
    if isinstance(train, pa.Table):
        train = train.take(kept)
    else:
        train = folder / f"train_{rows}.libfm"
        train.write_text("".join(lines[i] for i in kept))
    return Suite(train, suite.valid, suite.test, suite.data, suite.metric, training=suite.training,
                 notes=suite.notes | {"train_rows": rows})


# -- runs -----------------------------------------------------------------------------------------


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``section.key=value`` pairs as a nested mapping (values parsed as JSON where they parse)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    return nested


def run_one(model: str, suite: Suite, settings: dict[str, Any], read_test: bool) -> dict[str, Any]:
    from deepfm.api import Estimator
    from deepfm.config import merge

    sections = merge({"data": suite.data, "model": {"name": model}, "training": suite.training}, settings)
    estimator = Estimator(**sections)
    began = time.perf_counter()
    estimator.fit(suite.train, valid=suite.valid, progress=False)
    wall = time.perf_counter() - began
    record = {"valid": estimator.metrics["best_valid"], "epochs": estimator.metrics["epochs"],
              "best_epoch": estimator.metrics["best_epoch"], "train_wall_s": round(wall, 1),
              "train_samples_per_s": estimator.metrics["train_samples_per_s"],
              "config": estimator.config.training.model_dump(include={"optimizer", "lr", "batch_size", "embed_l2", "epochs"})
              | {"embed_dim": estimator.config.model.embed_dim}}
    if "ids" in estimator.metrics:  # the statistic of the data rule (deepfm.defaults) and its branch
        record["ids"] = estimator.metrics["ids"]
    if "portfolio" in estimator.metrics:  # one model per default recipe, validation kept one (deepfm.portfolio)
        record["portfolio"] = estimator.metrics["portfolio"]
        record["portfolio_choice"] = estimator.metrics["portfolio_choice"]
    if "refit" in estimator.metrics:  # trained again on train + valid for the epochs validation chose
        record["refit"] = estimator.metrics["refit"]
    for key in ("embed_reg", "linear_l2", "lr_schedule", "adagrad_init", "refit", "dense_optimizer", "dense_lr"):
        if hasattr(estimator.config.training, key):
            record["config"][key] = getattr(estimator.config.training, key)
    if read_test:
        record["test"] = test_metrics(estimator, suite)
    return record


def test_metrics(estimator, suite: Suite) -> dict[str, float]:
    """The test split's metrics, read once; for AUC also its DeLong standard error over the test rows."""
    from deepfm.training.trainer import predict_logits

    from accuracy_stats import auc_standard_error

    encoded = estimator.encode(suite.test, with_labels=True)
    logits = predict_logits(estimator.model, encoded, estimator.config.training.device)
    metrics = estimator.encoder.task.metrics(encoded.labels, logits, encoded.weights)
    if suite.metric == "auc":
        metrics["auc_se"] = auc_standard_error(np.asarray(encoded.labels), np.asarray(logits, dtype=np.float64))[1]
    return metrics


def merge_settings(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    from deepfm.config import merge

    return merge(base, overrides)


def candidate_table(results: list[dict[str, Any]]) -> str:
    """Candidate (and seed, with ``--seeds``) × (data set, model): the validation metric of each run (AUC ↑ or RMSE ↓)."""
    def row(r: dict[str, Any]) -> str:
        return r["candidate"] if r.get("seed") is None else f"{r['candidate']} s{r['seed']}"

    columns = list(dict.fromkeys((r["dataset"], r["model"]) for r in results))
    cell = {(row(r), r["dataset"], r["model"]): r for r in results}
    lines = ["| candidate | " + " | ".join(f"{d} {m}" for d, m in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for candidate in dict.fromkeys(row(r) for r in results):
        values = []
        for d, m in columns:
            r = cell.get((candidate, d, m))
            values.append("—" if r is None else f"{r['valid'][r['metric']]:.4f}")
        lines.append(f"| {candidate} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def metric_text(metrics: dict[str, float] | None, metric: str) -> str:
    if not metrics:
        return "—"
    if metric == "auc":
        return f"AUC {metrics['auc']:.4f} / LL {metrics['logloss']:.4f}"
    return f"RMSE {metrics['rmse']:.4f}"


def ids_text(ids: dict[str, Any] | None) -> str:
    """The data rule's statistic of a run (``IdCounts``): distinct ids per training row and rows per id."""
    if not ids:
        return ""
    per_row = ids["ids_per_row"]
    return f"  ids {ids['distinct']:,} in {ids['rows']:,} rows: {per_row:.4f} per row ({1 / per_row:.0f} rows per id), {ids['shape']}"


def portfolio_text(record: dict[str, Any]) -> str:
    """The default portfolio's candidates (valid metric of each) and the one validation kept, or nothing."""
    if "portfolio" not in record:
        return ""
    metric = record["metric"]
    tried = ", ".join(f"{c['name']} {c['best_valid'][metric]:.4f}" for c in record["portfolio"])
    return f"  portfolio: {tried}; kept {record['portfolio_choice']}"


def table_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| data | model | valid | test | reference (same split) | epochs (best) | train wall s |",
             "| --- | --- | --- | --- | --- | ---: | ---: |"]
    for r in results:
        model = f"{r['model']} (kept {r['portfolio_choice']})" if "portfolio_choice" in r else r["model"]
        lines.append(f"| {r['dataset']} | {model} | {metric_text(r['valid'], r['metric'])} | "
                     f"{metric_text(r.get('test'), r['metric'])} | {r.get('reference', '')} | "
                     f"{r['epochs']} ({r['best_epoch']}) | {r['train_wall_s']} |")
    return "\n".join(lines)


def over_seeds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (data set, model, candidate): the spread over seeds of the validation and test metric, and the
    mean of the test AUC's DeLong standard error (its sampling error over the test rows)."""
    from accuracy_stats import spread

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["model"], r["candidate"]), []).append(r)
    rows = []
    for (dataset, model, candidate), runs in groups.items():
        metric = runs[0]["metric"]
        row = {"dataset": dataset, "model": model, "candidate": candidate, "metric": metric,
               "seeds": [r["seed"] for r in runs], "valid": spread([r["valid"][metric] for r in runs])}
        if all("test" in r for r in runs):
            row["test"] = spread([r["test"][metric] for r in runs])
            if metric == "auc":
                row["test_auc_se"] = float(np.mean([r["test"]["auc_se"] for r in runs]))
        rows.append(row)
    return rows


def seeds_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| data | model | candidate | seeds | valid mean ± sd | test mean ± sd (min–max) | test AUC DeLong se |",
             "| --- | --- | --- | --- | --- | --- | ---: |"]
    for r in rows:
        test = r.get("test")
        test_text = f"{test['mean']:.4f} ± {test['sd']:.4f} ({test['min']:.4f}–{test['max']:.4f})" if test else "—"
        se = f"{r['test_auc_se']:.4f}" if "test_auc_se" in r else "—"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['candidate']} | {' '.join(map(str, r['seeds']))} | "
                     f"{r['valid']['mean']:.4f} ± {r['valid']['sd']:.4f} | {test_text} | {se} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="/work/shared/datasets")
    parser.add_argument("--only", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--models", default="lr,fm,deepfm")
    parser.add_argument("--set", nargs="*", default=[], dest="settings", help="section.key=value overrides (candidates)")
    parser.add_argument("--candidates", help="JSON file: candidate name -> settings; validation only")
    parser.add_argument("--validation-only", action="store_true", help="never read a test split (for choosing)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="run every (model, data set) once per training.seed and tabulate mean and sd")
    parser.add_argument("--train-rows", nargs="*", type=int, default=None,
                        help="run each data set on a seeded sample of N training rows (as NAME@N), for each N")
    parser.add_argument("--out", default=None, help="OUT.json and OUT.md (default benchmarks/results/accuracy_DATE)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "src"))
    settings = parse_settings(args.settings)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H%M")
    out = Path(args.out) if args.out else HERE / "results" / f"accuracy_{stamp}"
    candidates = json.loads(Path(args.candidates).read_text()) if args.candidates else {"": settings}
    validation_only = args.validation_only or bool(args.candidates)
    if (args.settings or args.candidates) and "portfolio" not in settings.get("training", {}):
        settings = merge_settings(settings, {"training": {"portfolio": "off"}})  # a candidate is one recipe, as set
    seeds = args.seeds or [None]
    results = []
    samples = tempfile.TemporaryDirectory(prefix="accuracy-samples-")
    runs = [(name, DATASETS[name](Path(args.datasets))) for name in args.only]
    if args.train_rows:
        runs = [(f"{name}@{rows}", sampled(suite, rows, Path(samples.name))) for name, suite in runs for rows in args.train_rows]
        for name, suite in runs:
            if suite is None:
                print(f"{name}: the training split is not larger; left out", flush=True)
        runs = [(name, suite) for name, suite in runs if suite is not None]
    for name, suite in runs:
        for model, (candidate, overrides), seed in itertools.product(args.models.split(","), candidates.items(), seeds):
            chosen = merge_settings(settings, overrides)
            if seed is not None:
                chosen = merge_settings(chosen, {"training": {"seed": seed}})
            record = run_one(model, suite, chosen, read_test=not validation_only)
            record.update(dataset=name, model=model, metric=suite.metric, reference=suite.references.get(model, ""),
                          candidate=candidate, seed=seed, **suite.notes)
            if "bayes_auc" in suite.notes and "test" in record:
                record["gap_to_bayes_auc"] = round(suite.notes["bayes_auc"] - record["test"]["auc"], 4)
            results.append(record)
            print(f"{name:13s} {model:7s} {candidate:24s} {'' if seed is None else f'seed {seed} '}valid {metric_text(record['valid'], suite.metric)}  "
                  f"test {metric_text(record.get('test'), suite.metric)}  {record['train_wall_s']} s{ids_text(record.get('ids'))}"
                  f"{portfolio_text(record)}", flush=True)
    report = {"date": stamp, "settings": settings, "candidates": candidates, "validation_only": validation_only,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other "
                         f"sessions (load {os.getloadavg()[0]:.1f} at the end)",
              "command": " ".join(sys.argv), "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    table = candidate_table(results) if args.candidates else table_markdown(results)
    if args.seeds:
        report["over_seeds"] = over_seeds(results)
        table += "\n\n" + seeds_markdown(report["over_seeds"])
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(f"`{report['command']}` ({report['machine']})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
