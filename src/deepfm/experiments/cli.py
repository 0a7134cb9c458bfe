"""``deepfm compare``: the paper's model comparison or one of its section 3.3 studies, as a report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from deepfm.experiments.studies import STUDIES

COMPARE_OUTPUTS = ("results.md", "results.json", "validation_curves.png", "roc.png")
DESCRIPTION = (
    "Train several models on ONE encoding (fitted once on --train), the same seeds and the same budget; "
    "select each run's best epoch on --valid (without it, on the training rows deepfm train would hold out) and "
    "score it once on --test. Writes OUT/results.md, "
    "OUT/results.json, OUT/validation_curves.png and (binary tasks) OUT/roc.png. --models all runs the "
    "DeepFM paper's table: lr, fm, fnn (FM pre-trained), ipnn, opnn, pnn, wide_deep (LR&DNN), fm_dnn, deepfm. "
    "--study varies one DeepFM setting as in the paper's section 3.3. Per-model tuned defaults, each model's first "
    "recipe as deepfm train --portfolio off trains it (deepfm.defaults), apply unless a flag or the config file sets "
    "the value."
)


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare models (or one DeepFM setting) and write a report",
                       description=DESCRIPTION)
    p.add_argument("--train", required=True, help="training file (the encoder is fitted on it once)")
    p.add_argument("--valid", help="validation file: early stopping and per-epoch curves (default: --valid-fraction of "
                   "the --train rows held out, as deepfm train holds them out)")
    p.add_argument("--valid-fraction", type=float, help="without --valid: the share of the --train rows held out for "
                   "validation (default 0.1)")
    p.add_argument("--test", required=True, help="test file: scored once per run with its best epoch")
    p.add_argument("--out", required=True, help="report directory (refused if it holds files, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out that holds an earlier compare's report "
                   "(its files are replaced)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--models", default="all", help="'all' or comma-separated model names (default all)")
    choice.add_argument("--study", choices=sorted(STUDIES), help="vary one DeepFM setting instead of the model")
    p.add_argument("--seeds", type=int, default=1, help="runs per model with seeds SEED, SEED+1, ... (mean ± std)")
    p.add_argument("--title", help="report title (default: the --out folder name)")
    p.add_argument("--task", choices=["auto", "binary", "regression"],
                   help="compare reports binary and regression models (AUC/logloss, RMSE/MAE); deepfm train and tune fit "
                        "multiclass and ordinal ones")
    p.add_argument("--label")
    p.add_argument("--positive", help="binary task with text labels: the label value that means 1 (e.g. '>50K'), as in "
                                      "train")
    p.add_argument("--one-vs-rest", action="store_true", default=None,
                   help="with --positive: every other label value means 0 (as in train)")
    p.add_argument("--format")
    for flag in ("--categorical", "--numeric", "--multi", "--ignore", "--mlp"):
        p.add_argument(flag)
    for flag in ("--min-count", "--hash-buckets", "--epochs", "--batch-size", "--embed-dim", "--patience",
                 "--seed", "--threads"):
        p.add_argument(flag, type=int)
    for flag in ("--lr", "--dense-lr", "--embed-l2", "--dropout"):
        p.add_argument(flag, type=float)
    from deepfm.cli import add_mlp_form_flags  # deepfm.cli registers this module, so import it late

    add_mlp_form_flags(p)  # --batch-norm, --activation, as train's
    p.add_argument("--optimizer", choices=["adam", "adagrad", "sgd"])
    p.add_argument("--embed-reg", choices=["rows", "occurrences"], help="the form of --embed-l2 for every model (as in "
                                                                        "deepfm train; each model's own by default)")
    p.add_argument("--numeric-encoding", choices=["scale", "bucket"])
    p.add_argument("--select-by", choices=["auto", "auc", "logloss", "rmse", "mae"],
                   help="the validation metric that keeps each model's best epoch (as in train)")
    p.add_argument("--device")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: the MLPs' hidden layers in bfloat16 (as in train)")
    p.add_argument("--no-pretrain", action="store_true", help="fnn: skip the FM pre-training stage")
    p.add_argument("--config", help="TOML, YAML or JSON file with [data], [model], [training] sections; flags override "
                                    "it (each option's [section.key] is its key there)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch log")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from deepfm.cli import FLAG_KEYS  # deepfm.cli registers this module, so import it late

    overrides: dict[str, Any] = {}
    for flag, (section, key) in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None and flag not in ("train", "valid"):
            overrides.setdefault(section, {})[key] = value
    if args.no_pretrain:
        overrides.setdefault("model", {})["pretrain"] = False
    return overrides


def refuse_compare_out(out: Path, overwrite: bool = False) -> None:
    """A ``--out`` that is a file, cannot be written or holds files other than an earlier compare's own is a
    ``ConfigError``; so is one that holds an earlier compare's report, unless ``overwrite`` (as ``deepfm train``'s
    ``--out``: a report of hours is not replaced without a word)."""
    from deepfm.cli import refuse_unwritable_out
    from deepfm.errors import ConfigError

    refuse_unwritable_out(out)
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    others = [name for name in held if name not in COMPARE_OUTPUTS]
    if others:
        raise ConfigError(f"--out {out}: the directory holds other files ({', '.join(others[:4])}"
                          f"{', ...' if len(others) > 4 else ''}): compare writes {', '.join(COMPARE_OUTPUTS)} there; "
                          "choose another --out")
    if held and not overwrite:
        raise ConfigError(f"--out {out}: the directory holds an earlier compare's report ({', '.join(held)}); "
                          "--overwrite replaces it, or choose another --out")


def cmd_compare(args: argparse.Namespace) -> int:
    from deepfm.config import build_config, load_config_file, merge
    from deepfm.data.filelist import is_pattern
    from deepfm.data.identity import data_checksums
    from deepfm.errors import ConfigError, DataError, warn_setting
    from deepfm.experiments.compare import (encode_splits, model_variants, parse_models, refuse_other_solvers,
                                            run_variants, study_variants)
    from deepfm.experiments.report import write_report

    for name in ("train", "valid", "test"):
        path = getattr(args, name)
        if path is not None and not (is_pattern(path) and name == "train") and not Path(path).exists():
            raise DataError(path, f"--{name} file not found")
    if args.seeds < 1:
        raise ConfigError("--seeds: must be at least 1")
    out = Path(args.out)
    refuse_compare_out(out, args.overwrite)  # before any model trains
    base = load_config_file(args.config) if args.config else {}
    overrides = _overrides(args)
    refuse_other_solvers(merge(base, overrides).get("training", {}).get("solver", "gradient"))
    files = {name: str(Path(getattr(args, name)).resolve()) for name in ("train", "valid") if getattr(args, name)}
    overrides.setdefault("data", {}).update(files)  # recorded in each model's config, which train --config takes
    device = overrides.get("training", {}).get("device", base.get("training", {}).get("device"))
    if device is not None:  # as train's: --device, or the config's, checked before any data is read
        from deepfm.devices import resolve_device

        option = "--device" if args.device is not None else "training.device"
        overrides.setdefault("training", {})["device"] = resolve_device(device, option)
    if args.study:
        variants = study_variants(args.study, base, overrides)
    else:
        variants = model_variants(parse_models(args.models), base, overrides)
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    for variant in variants:  # as train warns of it, --quiet or not: a flag that a model does not read is not applied
        ignored = [key for key in variant.config.model.unused_keys() if key in overrides.get("model", {})]
        if ignored:
            warn_setting(f"{variant.label}: {variant.config.model.unused_note(ignored)}")
    data = encode_splits(build_config(merge(base, overrides), source="compare"), args.train, args.valid, args.test)
    if data.holdout is not None:
        log(data.holdout.describe("every model's early stopping", "--valid FILE validates on a file instead"))
    command = "deepfm compare " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["compare"] else None
    files = {name: data_checksums(getattr(args, name)) for name in ("train", "valid", "test") if getattr(args, name)}
    results: list = []
    try:
        run_variants(variants, data, args.seeds, log, results)
    except KeyboardInterrupt:  # Ctrl-C: the runs that finished are reported, then the command stops as interrupted
        if results:
            runs = sum(len(result.runs) for result in results)
            write_report(results, data, out, f"{args.title or out.name} (interrupted: {runs} of "
                                             f"{len(variants) * args.seeds} runs)", command, files)
            log(f"interrupted: {out}/results.md reports the {runs} runs that finished")
        raise
    summary = write_report(results, data, out, args.title or out.name, command, files)
    from deepfm.experiments.report import markdown_table

    print(markdown_table(summary))
    return 0
