"""The ``deepfm`` command line. Errors in the user's input exit with status 2 and one
``path:line:column: what is wrong`` line, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import errno
import json
import math
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence, get_args

from deepfm import __version__
from deepfm.config import DataConfig, ModelConfig, ModelName, SelectBy, TrainingConfig
from deepfm.defaults import MODEL_DEFAULTS, NO_SHAPE_RULE, SHAPE_BANDS, SHAPE_DEFAULTS, TASK_DEFAULTS
from deepfm.data.formats import AUTO_RULE, FORMATS, check_data_file
from deepfm.errors import ConfigError, DataWarning, DeepFMError, SettingWarning, Stopped
from deepfm.experiments.cli import add_compare_parser, cmd_compare
from deepfm.runtime import set_process_environment, started_by_launch, stop_with_the_launcher
from deepfm.serving.cli import add_production_parsers, cmd_export, cmd_serve

KIND_RULE = (
    "Column kinds: --categorical/--numeric/--multi win; Criteo fixes I1..I13 numeric and C1..C26 categorical; "
    "otherwise a column is numeric when every value is a number and at least one has a decimal point or exponent "
    "(floats), and categorical otherwise (strings and integers, which are usually ids)."
)


CONFIG_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}
CONFIGURED_COMMANDS = ("train", "tune", "compare")  # whose options are config keys: their help names each one's key


MODEL_NAMES = get_args(ModelName)


def _shown(value: Any) -> str:
    if isinstance(value, bool):  # as the flag takes it: --batch-norm on
        return "on" if value else "off"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


# how the defaults' help names a model: not "lr 0.01" in the help of --lr
MODEL_TITLES = {"lr": "LR", "fm": "FM", "deepfm": "DeepFM"}


def config_default_text(section: str, key: str) -> str:
    """``default 0.001; FM 0.03, LR 0.01``: the config's default for ``section.key`` and the models
    whose tuned defaults (``deepfm.defaults``) replace it; empty when there is no default."""
    default = CONFIG_SECTIONS[section].model_fields[key].default
    if default is None or default == ():
        return ""

    def title(name: str) -> str:
        return MODEL_TITLES.get(name, name)

    overrides = [f"{title(name)} {_shown(values[section][key])}" for name, values in MODEL_DEFAULTS.items()
                 if key in values.get(section, {})]
    for name, tasks in TASK_DEFAULTS.items():
        by_value: dict[str, list[str]] = {}
        for task, values in tasks.items():
            if key in values:
                by_value.setdefault(_shown(values[key]), []).append(task)
        if by_value:
            overrides.append(f"{title(name)} " + " / ".join(f"{v} ({', '.join(t)})" for v, t in by_value.items()))
    for name, shapes in SHAPE_DEFAULTS.items():
        unruled = "".join(f", not {task}" for model, task in sorted(NO_SHAPE_RULE) if model == name)
        overrides += [f"{title(name)} {_shown(values[key])} ({shape}: {SHAPE_BANDS[shape]} distinct ids per training row"
                      f"{unruled})" for shape, values in shapes.items() if key in values]
    return f"default {_shown(default)}" + ("; " + ", ".join(overrides) if overrides else "")


class HelpFormatter(argparse.HelpFormatter):
    """Adds each option's default to its help, unless the help already says it."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and (_has_default(action) or self._names_key(action)):
            action = copy.copy(action)
            action.help = "default %(default)s" if _has_default(action) else "as in deepfm train"
        return super()._format_action(action)

    def _names_key(self, action: argparse.Action) -> bool:
        """Whether ``action`` is an option of a command whose options are config keys, and one of them."""
        return action.dest in FLAG_KEYS and self._prog.split()[-1] in CONFIGURED_COMMANDS

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is not None and "default" not in text and _has_default(action):
            text += " (default %(default)s)"
        if text is not None and self._names_key(action):
            text += " [%s.%s]" % FLAG_KEYS[action.dest]  # its key in a --config file and in Estimator(section={key: ..})
        return text


def _has_default(action: argparse.Action) -> bool:
    """An option with a value of its own to show (not a switch, not None: a config may set it)."""
    return bool(action.option_strings) and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help shows defaults; its subcommands' parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # --epoch is not --epochs: a later option would make it ambiguous
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """argparse's usage error, with the closest choice or option where a name was mistyped (``deepfm trian``:
        did you mean 'train'?)."""
        super().error(message + did_you_mean(message, self))

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """argparse's, except that options unknown to a subcommand are reported by that subcommand (its usage
        shows its own arguments: ``deepfm evaluate [...] dir path``), with the subcommands that take the option
        given, or else the closest of its own options."""
        parsed, extras = self.parse_known_args(args, namespace)
        if not extras:
            return parsed
        message = f"unrecognized arguments: {' '.join(extras)}"
        commands = subcommands(self)
        command = commands.get(getattr(parsed, "command", None) or "")
        if command is None:
            self.error(message)
        typed = first_option(extras)
        owners = [f"deepfm {name}" for name, other in commands.items() if typed in long_options(other)]
        expanded = expanded_pattern(list(args) if args is not None else sys.argv[1:], extras)
        if expanded:
            example = f"{expanded} 'data/day_*.csv'" if expanded.startswith("--") else "'data/day_*.csv'"
            hint = (f"; {expanded} takes one file or a quoted pattern, and a pattern the shell expands reaches deepfm as "
                    f"its files one by one: quote it ({example})")
        elif command.prog in owners:  # given before the subcommand (deepfm --json evaluate ...)
            hint = f"; {typed} is an option of {command.prog}: give it after '{parsed.command}'"
        elif owners:
            hint = (f"; {typed} is an option of {', '.join(owners[:-1])}{' and ' if len(owners) > 1 else ''}"
                    f"{owners[-1]}, not of {command.prog}")
        else:
            hint = did_you_mean(message, command)
        argparse.ArgumentParser.error(command, message + hint)

    def _print_message(self, message: str, file: Any = None) -> None:
        """argparse's, except that a reader of stdout that left (``deepfm train --help | head``) is not passed over
        but ends the command as it ends the others (``entry``)."""
        if message and file is not None and file is sys.stdout:
            file.write(message)
        else:
            super()._print_message(message, file)


def expanded_pattern(args: Sequence[str], extras: Sequence[str]) -> str:
    """Where an unquoted glob was given that the shell expanded (``--train``, or "the data path" of ``evaluate`` and
    ``predict``), when ``extras`` (the arguments argparse left over) are existing files right after another file; else
    ""."""
    if not extras or any(word.startswith("-") for word in extras) or not all(Path(word).is_file() for word in extras):
        return ""
    start = next((i for i in range(1, len(args) - len(extras) + 1) if list(args[i:i + len(extras)]) == list(extras)), 0)
    if not start or not Path(args[start - 1]).is_file():
        return ""
    option = args[start - 2] if start >= 2 else ""
    return option if option.startswith("--") else "the data path"


def did_you_mean(message: str, parser: argparse.ArgumentParser) -> str:
    """``"; did you mean 'train'?"`` for argparse's "invalid choice: 'trian' (choose from ...)" or "unrecognized
    arguments: --epoch 3", where one of the choices or ``parser``'s options is close; else ""."""
    import difflib
    import re

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if choice:
        typed, known = choice[1], re.findall(r"'([^']*)'", choice[2])
    else:
        unknown = re.search(r"unrecognized arguments: (.*)$", message)
        typed, known = first_option(unknown[1].split() if unknown else []), long_options(parser)
        name = typed.lstrip("-").replace("-", "_").lower()  # libFM's spelling: -learn_rate
        if name in LIBFM_OPTIONS:
            return f"; libFM's -{name} {LIBFM_OPTIONS[name]}"
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6) if typed else []
    return f"; did you mean '{close[0]}'?" if close else ""


# libFM's options (and xLearn's where named alike) and deepfm's for them: a user who types -learn_rate is told --lr
LIBFM_OPTIONS = {
    "dim": "is --embed-dim (its '1,1,8' is --embed-dim 8: w0 and w are always on)",
    "iter": "is --epochs (--sweeps with --solver mcmc or als)",
    "method": "is --solver (sgd: gradient, with --optimizer sgd; als; mcmc)", "learn_rate": "is --lr",
    "regular": "is --embed-l2 and --linear-l2 (--als-l2 with --solver als; mcmc needs none)",
    "init_stdev": "has no counterpart (MCMC and ALS start V at a standard deviation of 0.1, gradient training at 0.01)",
    "meta": "is a libFFM file's field numbers (each field its own MCMC hyperprior group, as -meta's groups)",
    "test": "is deepfm evaluate MODEL_DIR TEST (and predict)", "out": "is deepfm predict MODEL_DIR FILE --out PATH",
    "validation": "is --valid", "rlog": "is the log on stderr and OUT/metrics.json",
    "task": "is --task (its r is --task regression, its c --task binary)",
}


def first_option(words: Sequence[str]) -> str:
    """The first ``--option`` (or libFM's ``-option``) among ``words`` (``--epoch=3``: ``--epoch``), or ""."""
    return next((word.split("=")[0] for word in words if word.startswith("-") and len(word) > 2
                 and not word.lstrip("-")[:1].isdigit()), "")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``parser``'s subcommands' parsers by name."""
    return {name: command for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, command in action.choices.items()}


def long_options(parser: argparse.ArgumentParser) -> list[str]:
    """The ``--options`` of ``parser`` and of its subcommands' parsers (argparse reports an unknown option of
    ``deepfm train`` from the top-level parser)."""
    options = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    for command in subcommands(parser).values():
        options += long_options(command)
    return list(dict.fromkeys(options))


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from files into a model directory",
                       description="Train LR, FM, DeepFM or a baseline of the DeepFM paper. " + KIND_RULE + " Format "
                                   + AUTO_RULE + ". Defaults come from the config (an explicit flag wins over --config, "
                                   "which wins over a model's own defaults: 'FM 0.1 (binary)' below).")
    add_run_flags(p)
    p.add_argument("--nproc", type=int, default=1,
                   help="train with N processes on this machine (torchrun, gloo on CPU / nccl on GPU); with "
                        "--stream each streams its own share of every epoch; for several machines run torchrun "
                        "yourself (docs/production.md)")
    p.add_argument("--max-restarts", type=int, default=0,
                   help="restart the processes up to K times when one fails (torchrun's --max-restarts); a restart "
                        "continues from OUT/checkpoint (see --checkpoint-every)")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps as well as every epoch (0: every epoch "
                                                         "only); mcmc/als: every N sweeps (0: every 50)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--portfolio", choices=["auto", "off"],
                   help="auto: where the defaults list several recipes for the model, task and data (FM and DeepFM on "
                        "clicks), train one model per recipe from the same seed and keep the best on validation rows "
                        "(about N times one run's time; not when a flag sets one of their keys; --epochs bounds each); off: the defaults only")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep OUT/checkpoint after a finished run (default: removed; it is several times the model's size)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results on stdout")


def _tune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search a model's settings with Optuna on validation rows; write the best model",
                       description="Search the optimiser and its learning rate (a log range per optimiser), the "
                                   "embedding L2's form and strength, k, batch size, lr schedule and (models with an "
                                   "MLP) its widths, dropout, batch norm and weight decay with Optuna (multivariate TPE, "
                                   "successive-halving pruning by epoch). Trial 0 is what train would run (the defaults "
                                   "for the task and data); on clicks the next trials are recipes that won on Frappe. "
                                   "Trials train on one encoding of the data with one thread (unless --threads) and are "
                                   "selected on validation rows only (--valid, or those held out of --train); a test "
                                   "file is never read. The best trial is then refitted on the training and validation "
                                   "rows together for the epochs validation chose (--refit off: kept as it trained). "
                                   "Writes OUT as that model's directory plus OUT/tune.json (every trial) and "
                                   "OUT/best.toml (deepfm train --config OUT/best.toml --out DIR reproduces it). The data flags are "
                                   "train's; a flag given fixes the base config each trial starts from. Needs "
                                   "pip install 'deepfm[tune]'.")
    add_run_flags(p, gradient_only=True)
    next(action for action in p._actions if action.dest == "refit").help = (
        "the saved model: on (the default), the best trial trained again from its seed on the training and validation "
        "rows together for the epochs validation chose (its lr drops replayed); off: the best trial as it trained; "
        "held-out: refit only rows held out by --valid-fraction")
    p.add_argument("--trials", type=int, help="at most N trials (default 20 when --timeout is not given either)")
    p.add_argument("--timeout", type=float, help="start no trial after SECONDS (the running trial finishes; then the best "
                   "trial is refitted on train + valid unless --refit off, which takes about one trial more)")
    p.add_argument("--json", action="store_true", help="end with one JSON line: the best trial, its metric and params")


def add_run_flags(p: argparse.ArgumentParser, gradient_only: bool = False) -> None:
    """The data, model and training flags that ``train`` and ``tune`` share (``FLAG_KEYS``); ``gradient_only``
    (tune): without the sampling and ALS solvers' flags, and without --resume."""
    p.add_argument("--train", help="training file, or a quoted glob of files with the same columns ('day_*.gz')")
    p.add_argument("--valid", help="validation file (early stopping keeps the best epoch)")
    p.add_argument("--valid-fraction", type=float,
                   help="without --valid: the share of training rows held out (each by a seeded hash of its position; "
                        "left out of the vocabularies, trained on only by --refit) for "
                        "early stopping (default 0.1" + ("" if gradient_only else "; mcmc/als, which stop at --sweeps, "
                                                         "hold none out unless it is given") + "); 0: none")
    p.add_argument("--out", help="model directory to write (refused if it holds other files, unless --overwrite"
                                 + ("" if gradient_only else " or --resume") + ")")
    p.add_argument("--model", help=" | ".join(MODEL_NAMES) + "; of the DeepFM paper's baselines pnn is PNN*, wide_deep "
                   "LR&DNN, fm_dnn FM&DNN; fnn first pre-trains an FM for its embeddings (--no-pretrain: random start)")
    p.add_argument("--no-pretrain", dest="pretrain", action="store_false", default=None,
                   help="fnn: skip the FM pre-training stage")
    p.add_argument("--task", choices=["auto", "binary", "regression", "multiclass", "ordinal"],
                   help="auto: binary if labels are 0/1, regression for ratings or real values; ordinal: ordered "
                        "numeric classes such as ratings 1-5 (a cumulative link" + ("" if gradient_only else
                                                                                      "; ordered probit with --solver mcmc") + ")")
    p.add_argument("--label", help="label column")
    p.add_argument("--positive", help="binary task with text labels: the label value that means 1 (e.g. '>50K'); the "
                                      "labels hold it and one other value, which means 0")
    p.add_argument("--one-vs-rest", action="store_true", default=None,
                   help="with --positive: every other label value means 0 (e.g. --positive 5 on ratings 1-5)")
    p.add_argument("--weight", help="column of per-row weights for the loss and metrics (default: every row weighs 1)")
    p.add_argument("--format", choices=["auto", *FORMATS])
    p.add_argument("--categorical", help="comma-separated columns to treat as categorical")
    p.add_argument("--numeric", help="comma-separated columns to treat as numeric")
    p.add_argument("--multi", help="comma-separated multi-valued columns: 'a|b|c', optional 'id:weight'")
    p.add_argument("--multi-separator", help="the character between a multi-valued cell's values")
    p.add_argument("--ignore", help="comma-separated columns to leave out ('' alone: the column whose header is empty, "
                                      "as pandas' to_csv writes its index)")
    p.add_argument("--min-count", type=int, help="values rarer than this in train share their field's rare id (default: 1; 10 where "
                                                  "the training ids are a long tail of 10,000+ rows, deepfm.defaults)")
    p.add_argument("--hash-buckets", type=int, help="hash fields with more distinct values than this into this many buckets (0: never)")
    p.add_argument("--numeric-encoding", choices=["scale", "bucket"])
    p.add_argument("--stream", nargs="?", const="on", choices=["auto", "on", "off"],
                   help="read the training file chunk by chunk every epoch, for files larger than memory "
                        "(--stream alone: on; auto: when the encoded file would take over half the free memory)")
    p.add_argument("--chunk-rows", type=int, help="rows per chunk when reading chunk by chunk")
    p.add_argument("--shuffle-window", type=int, help="streaming: chunks whose rows are shuffled together")
    p.add_argument("--epochs", type=int)
    if not gradient_only:  # tune trains by gradient (compare.refuse_other_solvers)
        p.add_argument("--solver", choices=["gradient", "mcmc", "als"],
                       help="gradient: minibatch training (every model); mcmc: Bayesian FM by Gibbs sampling (libFM's MCMC: "
                            "no learning rate or L2 to tune; regression, binary, ordinal); als: alternating least squares "
                            "(regression); mcmc and als need --model fm and count --sweeps instead of --epochs")
        p.add_argument("--sweeps", type=int, help="mcmc/als: passes over every parameter")
        p.add_argument("--burn-in", type=int, help="mcmc: first sweeps whose samples are dropped (default a tenth of --sweeps)")
        p.add_argument("--samples", type=int, help="mcmc: posterior samples the model keeps, evenly spaced after the "
                                                   "burn-in (0: every sweep's)")
        p.add_argument("--als-l2", type=float, help="als: λ of w and V")
    p.add_argument("--batch-size", type=int, help="rows a step; where it is not set, LR and FM on clicks and ratings take "
                   "a smaller power of two (down to 32) on under 8,192 (LR) or 32,768 (FM) training rows, as the log says")
    p.add_argument("--lr", type=float, help="learning rate: the tables', and the MLP's unless --dense-lr sets that, or "
                                              "DeepFM's own on clicks and ratings (see --dense-lr)")
    p.add_argument("--optimizer", choices=["adam", "adagrad", "sgd", "rowwise_adagrad"],
                   help="rowwise_adagrad: AdaGrad (one accumulator per row) for embeddings, Adam for dense weights")
    p.add_argument("--dense-optimizer", choices=["adam", "adagrad", "sgd"],
                   help="the dense (MLP) weights' optimiser (default: the one that goes with --optimizer)")
    p.add_argument("--dense-lr", type=float, help="the dense (MLP) weights' learning rate (default: --lr; DeepFM on clicks and ratings 0.001)")
    p.add_argument("--adagrad-init", type=float,
                   help="AdaGrad's accumulator start G0: above 0, rarely seen ids step in proportion to their gradient")
    p.add_argument("--embed-dim", type=int, help="k, the embedding width")
    p.add_argument("--embed-l2", type=float, help="L2 strength on embeddings (form: --embed-reg)")
    p.add_argument("--linear-l2", type=float, help="L2 strength on first-order weights (default: --embed-l2)")
    p.add_argument("--embed-reg", choices=["rows", "occurrences"],
                   help="rows: λ·v on each distinct row of a batch; occurrences: λ·mean over the batch of Σ_f ‖v_f‖²")
    p.add_argument("--lr-schedule", choices=["none", "plateau"],
                   help="plateau: on an epoch without improvement, reload the best weights and divide the lr by 10")
    p.add_argument("--refit", nargs="?", const="on", choices=["off", "held-out", "on"],
                   help="after early stopping, train again from the start on the training and validation rows together "
                        "for the epochs validation chose (the same lr drops) and save that model; held-out: only for "
                        "rows held out by --valid-fraction (FM and DeepFM on regression ratings: the default); --refit alone: on")
    p.add_argument("--mlp", help="hidden widths, e.g. 400,400,400")
    p.add_argument("--dropout", type=float)
    add_mlp_form_flags(p)
    p.add_argument("--patience", type=int, help="epochs without improvement before stopping (0: never stop early)")
    p.add_argument("--min-improvement", type=float, help="the relative gain of the validation metric an epoch needs to "
                   "count as an improvement (default 0: any; 1e-5 trained FM on MovieLens 3-4x shorter for +0.0001 to "
                   "+0.0003 validation RMSE)")
    p.add_argument("--select-by", choices=list(get_args(SelectBy)),
                   help="the validation metric that keeps the best epoch, stops early and chooses among recipes, of "
                        "those the task reports (binary: auc, logloss; regression: rmse, mae; multiclass: accuracy, "
                        "logloss, auc; ordinal: those and rmse, mae); auto: the task's (binary auc, regression rmse, "
                        "multiclass and ordinal logloss); logloss for probabilities that bid or calibrate")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch intra-op threads (0: one per core)")
    p.add_argument("--device", help="cpu, cuda or auto (default auto: cuda when available, else cpu)")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: the MLP's hidden layers in bfloat16 (autocast), faster on CPUs with AVX512-BF16/AMX "
                        "(DeepFM: 1.4-1.8x fp32's training speed in the README's runs; not on the GPUs measured, "
                        "at the default widths); embeddings, FM term, output layer and weights stay fp32")
    p.add_argument("--config", help="TOML, YAML or JSON file with [data], [model], [training] sections; flags override it "
                                    "(each option's [section.key] is its key there, and in Python Estimator(section={key: "
                                    "value}))")
    p.add_argument("--overwrite", action="store_true", help="write into an --out that holds files (they are replaced)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or log (warnings about the data, the lines starting note:, still print)")


def on_off(text: str) -> bool:
    """``--batch-norm on|off`` (true/false, 1/0 too) as a bool."""
    value = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return value


def add_mlp_form_flags(p: argparse.ArgumentParser) -> None:
    """The MLP's form: batch norm after each hidden layer (the DeepFM paper's models run without it) and the
    activation (the paper's IPNN: tanh); train's and compare's."""
    p.add_argument("--batch-norm", type=on_off, metavar="{on,off}", help="batch norm after each hidden layer")
    p.add_argument("--activation", choices=["relu", "tanh", "sigmoid"], help="the hidden layers' activation")


FLAG_KEYS = {
    "train": ("data", "train"), "valid": ("data", "valid"), "valid_fraction": ("data", "valid_fraction"),
    "task": ("data", "task"), "label": ("data", "label"), "positive": ("data", "positive"),
    "one_vs_rest": ("data", "one_vs_rest"),
    "weight": ("data", "weight"),
    "format": ("data", "format"), "categorical": ("data", "categorical"), "numeric": ("data", "numeric"),
    "multi": ("data", "multi"), "multi_separator": ("data", "multi_separator"), "ignore": ("data", "ignore"), "min_count": ("data", "min_count"),
    "hash_buckets": ("data", "hash_buckets"), "numeric_encoding": ("data", "numeric_encoding"),
    "stream": ("data", "stream"), "chunk_rows": ("data", "chunk_rows"), "shuffle_window": ("data", "shuffle_window"),
    "model": ("model", "name"), "embed_dim": ("model", "embed_dim"), "mlp": ("model", "mlp"),
    "dropout": ("model", "dropout"), "batch_norm": ("model", "batch_norm"), "activation": ("model", "activation"),
    "pretrain": ("model", "pretrain"), "epochs": ("training", "epochs"), "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"), "optimizer": ("training", "optimizer"), "adagrad_init": ("training", "adagrad_init"),
    "dense_optimizer": ("training", "dense_optimizer"), "dense_lr": ("training", "dense_lr"), "embed_l2": ("training", "embed_l2"),
    "embed_reg": ("training", "embed_reg"), "linear_l2": ("training", "linear_l2"), "lr_schedule": ("training", "lr_schedule"),
    "patience": ("training", "patience"), "min_improvement": ("training", "min_improvement"), "select_by": ("training", "select_by"), "seed": ("training", "seed"), "threads": ("training", "threads"),
    "device": ("training", "device"), "precision": ("training", "precision"), "checkpoint_every": ("training", "checkpoint_every"),
    "solver": ("training", "solver"), "sweeps": ("training", "sweeps"), "burn_in": ("training", "burn_in"),
    "samples": ("training", "samples"), "als_l2": ("training", "als_l2"), "refit": ("training", "refit"),
    "portfolio": ("training", "portfolio"),
}


def describe_config_defaults(parser: argparse.ArgumentParser) -> None:
    """Config flags default to None, so that a config file can set them: their help says what applies."""
    for action in parser._actions:
        default = config_default_text(*FLAG_KEYS[action.dest]) if action.dest in FLAG_KEYS and action.nargs != 0 else ""
        if default and "default" not in (action.help or ""):
            action.help = f"{action.help} ({default})" if action.help else default


def given_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the user set: the config file's nested values and the flags' (``FLAG_KEYS``), apart."""
    from deepfm.config import load_config_file

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    overrides: dict[str, Any] = {}
    for flag, (section, key) in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return values, overrides


def config_from_args(args: argparse.Namespace):
    from deepfm.config import build_config, merge
    from deepfm.config_lines import key_lines, unless_set
    from deepfm.devices import resolve_device

    values, overrides = given_settings(args)
    if args.out is not None:
        overrides["out"] = args.out
    device = overrides.get("training", {}).get("device", values.get("training", {}).get("device", "auto"))
    option = "--device" if getattr(args, "device", None) is not None else "training.device"
    overrides.setdefault("training", {})["device"] = resolve_device(device, option)  # before any data is read
    lines = unless_set(key_lines(args.config), overrides) if args.config else {}
    config = build_config(merge(values, overrides), source=args.config or "options", lines=lines)
    missing = [name for name, value in (("--train", config.data.train), ("--out", config.out)) if value is None]
    if missing:
        from deepfm.errors import ConfigError

        raise ConfigError(f"{args.command}: {' and '.join(missing)} required (as flags or in the config file)")
    from deepfm.data.filelist import is_pattern, training_files

    for name in ("train", "valid"):
        path = getattr(config.data, name)
        if path is not None and is_pattern(path) and not Path(path).exists():
            training_files(path)  # the pattern matches files
        elif path is not None and not Path(path).exists():
            from deepfm.errors import DataError

            from_file = (args.config and name not in overrides.get("data", {}) and not Path(path).is_absolute()
                         and Path(args.config).resolve().parent != Path.cwd().resolve())  # (the same folder: no matter)
            raise DataError(path, f"--{name} file not found" + (
                f" (data.{name} of {args.config}: a relative path there is read from the folder you run in, "
                f"{Path.cwd()}, as a flag's is, not from the config file's folder)" if from_file else ""))
        elif path is not None:
            check_data_file(path)  # not a directory
    return config


def of_an_interrupted_run(name: str) -> bool:
    """Whether an ``--out`` entry called ``name`` is a run's own checkpoint file (FNN's pre-training stage too) or
    its lock (``RUN_LOCK``, left by a run killed with SIGKILL)."""
    from deepfm.artifact import CHECKPOINT

    return name in CHECKPOINT or name.startswith("checkpoint-fnn") or name == RUN_LOCK


def refuse_occupied_out(out: str | Path, overwrite: bool) -> None:
    """Stop a run that would silently replace what ``out`` holds; with ``overwrite``, drop its old
    checkpoint so that a later ``--resume`` cannot mix two runs."""
    from deepfm.artifact import CHECKPOINT, remove_checkpoint
    from deepfm.errors import ConfigError

    out = Path(out)
    refuse_unwritable_out(out)
    if overwrite:
        remove_checkpoint(out)
        return
    held = sorted(p.name for p in out.iterdir() if p.name != RUN_LOCK) if out.is_dir() else []
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        interrupted = all(map(of_an_interrupted_run, held))
        resume = (" --resume continues its checkpoint," if CHECKPOINT[0] in held else
                  " it holds an interrupted run's files and no checkpoint: --resume starts that run again," if interrupted
                  else "")
        raise ConfigError(f"--out {out}: the directory is not empty ({shown});{resume} --overwrite replaces it, "
                          "or choose another --out")


def refuse_unwritable_out(out: Path) -> None:
    """A ``--out`` directory that is a file or cannot be made or written (a parent that is a file, a read-only place)
    is refused before any data is read: found after the training, the search or compare's models, it lost them."""
    from deepfm.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    existing = next(parent for parent in (out, *out.parents) if parent.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: cannot be made, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot be written ({existing} is not writable)")


def refuse_resume_without_checkpoint(out: Path, overwrite: bool) -> None:
    """``--resume`` where ``out`` holds no checkpoint starts from scratch only when ``out`` is new or holds no
    more than an interrupted run's own files; a saved model (or anything else) is not trained over unless
    ``overwrite``."""
    from deepfm.resumable import checkpoint_saved
    from deepfm.errors import ConfigError

    if overwrite or not out.is_dir() or checkpoint_saved(out):
        return
    held = sorted(p.name for p in out.iterdir() if not of_an_interrupted_run(p.name))
    if held:
        what = "a saved model" if "manifest.json" in held else f"other files ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''})"
        raise ConfigError(f"--resume: --out {out} holds {what} and no checkpoint to resume; --overwrite trains "
                          "again from scratch and replaces it, or choose another --out")


def say_what_a_failed_rank_left(args: argparse.Namespace, out: Path) -> None:
    """After a rank of ``--nproc`` failed: the command that resumes the run from its checkpoint, or that there is none
    (the run's first files then go, as after Ctrl-C), or that the model had been saved (a failure in teardown)."""
    from deepfm.resumable import checkpoint_saved

    if checkpoint_saved(out):
        say_line(f"a rank failed; resume with: {resume_command(args)}")
    elif (out / "model.safetensors").exists():
        say_line(f"a rank failed after the model was saved in {out}")
    else:
        with contextlib.suppress(OSError):
            forget_unsaved_run(out, args.out_existed)  # the same command runs again
        say_line("a rank failed before the first checkpoint: nothing to resume")


def forget_unsaved_run(out: Path, existed: bool) -> None:
    """An interrupted run that saved no checkpoint leaves ``out`` as it found it: its checkpoint files
    (the encoders, the run's record, a checkpoint being written) go, and ``out`` too if the run made it."""
    from deepfm.artifact import remove_checkpoint
    from deepfm.training.checkpoint import remove_checkpoint_dirs

    remove_checkpoint(out)
    remove_checkpoint_dirs(out / "checkpoint-fnn-stage1")
    if not existed and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def json_line(value: Any) -> str:
    """``value`` as one line of strict JSON: a non-finite float (AUC of a file with one class: NaN)
    becomes ``null``, not the bare ``NaN`` that JSON parsers refuse."""
    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), allow_nan=False)


def metric_pairs(metrics: dict[str, float], prefix: str = "valid ") -> str:
    """``valid auc 0.94891  valid logloss 0.32012``: metrics as the epoch log prints them."""
    from deepfm.tasks import metric_text

    return "  ".join(f"{prefix}{metric_text(name, value)}" for name, value in metrics.items())


def refuse_label_of_sparse_rows(label: str | None, data: DataConfig) -> None:
    """``--label`` names a column; a libFM/libFFM line carries its label first. Refused there, rather than ignored
    and saved with the model (whose later files it would then look for)."""
    from deepfm.data.formats import detect_format
    from deepfm.errors import ConfigError

    if label is None or data.train is None or not Path(data.train).is_file():
        return  # (a file pattern is checked file by file when read)
    fmt = data.format if data.format != "auto" else detect_format(data.train)
    if fmt in ("libfm", "libffm"):
        raise ConfigError(f"--label {label}: {data.train} is a {fmt} file, whose lines give the label first, not in a "
                          "named column; leave --label out")


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # checked before any process starts
    refuse_label_of_sparse_rows(args.label, config.data)
    args.out = config.out  # the interrupt message looks there (it may come from --config)
    args.out_existed = Path(config.out).exists()  # an interrupt before the first checkpoint leaves it as it was
    if started_by_launch() or torchrun_rank() != 0:  # a rank: its launcher, or torchrun's rank 0, holds --out
        return _train(args, config)
    refuse_unwritable_out(Path(config.out))
    with run_lock(Path(config.out)):
        return _train(args, config)


RUN_LOCK = ".deepfm-train.lock"  # in --out while a deepfm train writes there (its process id)


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out`` for this train: a second train into it is refused while this one runs (two had both exited 0,
    the last save winning, their checkpoints mixed in one folder). An ``flock``, which the OS releases if the process
    dies; the file goes when the run ends, and a folder made for the run alone with it."""
    import fcntl

    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / RUN_LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(f"--out {out}: another deepfm train is writing there (process {holder}); wait for it to "
                          "end, or train into another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            (out / RUN_LOCK).unlink()
            if made and not any(out.iterdir()):
                out.rmdir()
        handle.close()


def _train(args: argparse.Namespace, config: Any) -> int:
    from deepfm import distributed
    from deepfm.api import Estimator, refuse_sweeps_on_ranks
    from deepfm.artifact import remove_checkpoint

    # a rank torchrun restarted continues the run from its last checkpoint (Estimator.fit decides with all ranks)
    resume = args.resume or distributed.restart_count() > 0
    if not resume and not distributed.launched():  # ranks start after the launcher checked
        refuse_occupied_out(config.out, args.overwrite)
    elif args.resume and not distributed.launched():
        refuse_resume_without_checkpoint(Path(config.out), args.overwrite)
    if (args.nproc > 1 or args.max_restarts > 0) and not distributed.under_torchrun():
        refuse_sweeps_on_ranks(config, args.nproc)  # before any process starts
        ranks_argv = distributed.without_flag(distributed.without_flag(args.argv, "--nproc"), "--max-restarts")
        code = distributed.launch(args.nproc, ranks_argv, args.max_restarts)
        if code == 1:  # a rank failed (torchrun named it above)
            say_what_a_failed_rank_left(args, Path(config.out))
        return code
    quiet = args.quiet or torchrun_rank() != 0  # under torchrun, rank 0 speaks for all
    log = None if quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        estimator = Estimator(config).fit(resume=args.resume, progress=not quiet, log=log)
    except DeepFMError as error:  # said before cleanup ends the process group, so before the other ranks' echoes of it
        say_line(str(error))
        from deepfm.resumable import checkpoint_saved

        if torchrun_rank() == 0 and not checkpoint_saved(Path(config.out)):
            with contextlib.suppress(OSError):  # e.g. a run that diverged before its first checkpoint: the same
                forget_unsaved_run(Path(config.out), args.out_existed)  # command, with the lower --lr it suggests, runs
        return 2
    except Exception as error:
        if torchrun_rank() == 0:
            raise
        # most often a collective that lost rank 0, which has printed the cause: one line, no traceback
        say_line(f"rank {os.environ['RANK']} stopped: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
        return 1
    finally:
        distributed.cleanup()
    if torchrun_rank() != 0:
        return 0  # rank 0 reports
    if not args.keep_checkpoint:
        remove_checkpoint(config.out)
    m = estimator.metrics
    if args.json:
        summary = {k: m[k] for k in ("rows", "epochs", "seconds", "train_samples_per_s", "peak_rss_mb", "best_epoch")}
        summary["best_valid"] = m["best_valid"]
        summary["valid_rows"] = m.get("valid_rows")  # held out of the training file or read from --valid
        summary["task"] = m["task"]
        if "seconds_before_resume" in m:  # of seconds, the sessions' before a --resume
            summary["seconds_before_resume"] = m["seconds_before_resume"]
        if "portfolio_choice" in m:
            summary["portfolio_choice"] = m["portfolio_choice"]  # the recipe validation kept (metrics.json: each tried)
        if "refit" in m:  # the saved model: trained again on these rows for the epochs best_valid chose
            summary["refit"] = {k: m["refit"][k] for k in ("rows", "epochs")}
        print(json_line(summary))
    elif not args.quiet:
        if config.training.solver != "gradient":  # sampling and ALS: every sweep counts, none is chosen
            chosen = f"{m['epochs']} sweeps" + (f": {metric_pairs(m['best_valid'])}" if m["best_valid"] else
                                                ", no validation")
        elif m["best_valid"]:
            chosen = f"best epoch {m['best_epoch']}: {metric_pairs(m['best_valid'])}"
        else:
            why = "--valid-fraction 0" if not config.data.valid_fraction else "no row was held out"
            chosen = f"last epoch {m['epochs']}, no validation ({why})"
        if "portfolio_choice" in m:
            chosen += f"; recipe {m['portfolio_choice']}, the best of {len(m['portfolio'])} on validation"
        if "refit" in m:
            epochs = m["refit"]["epochs"]
            chosen += (f"; then refitted on {m['refit']['rows']:,} rows, the validation rows among them, for {epochs} "
                       f"epoch{'s' if epochs != 1 else ''}: the validation score is from before the refit")
        print(f"saved {config.out} ({chosen})", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from deepfm.config import merge
    from deepfm.errors import ConfigError
    from deepfm.experiments.tune import DEFAULT_TRIALS, import_optuna, run_tune

    import_optuna()  # a missing extra is said before any data is read
    config = config_from_args(args)
    if args.trials is not None and args.trials < 1:
        raise ConfigError("--trials: must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("--timeout: must be a positive number of seconds")
    refuse_occupied_out(config.out, args.overwrite)
    trials = args.trials if args.trials is not None or args.timeout is not None else DEFAULT_TRIALS
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    given = merge(*given_settings(args))
    fixed = {(section, key) for section, keys in given.items() if isinstance(keys, dict) for key in keys}
    summary = run_tune(config, trials, args.timeout, log, progress=not args.quiet, fixed=fixed)
    if args.json:
        print(json_line({k: summary[k] for k in ("model", "metric", "best_trial", "best_value", "best_params", "refit",
                                                  "interrupted")} | {"trials": len(summary["trials"])}))
    elif not args.quiet:
        refit = summary["refit"]
        refitted = f"; refitted on {refit['rows']} rows for {refit['epochs']} epochs" if refit else ""
        print(f"saved {config.out}: trial {summary['best_trial']} of {len(summary['trials'])}, valid {summary['metric']} "
              f"{summary['best_value']:.5f}{refitted} ({config.out}/tune.json, {config.out}/best.toml)", file=sys.stderr)
    return 128 + summary.get("signal", signal.SIGINT) if summary["interrupted"] else 0  # cut short, saved: a script
    # still tells it apart (SIGTERM's 143)


def _load(directory: str, fmt: str | None, path: str):
    """The model of ``directory``, reading ``path`` as ``--format`` says; without one, as the model reads a file
    (``api.plainly_other_format``: its training files' format, unless the file is plainly another, with a note)."""
    from deepfm.errors import require_directory

    require_directory(directory)  # what is plainly wrong is said before torch loads (seconds)
    from deepfm.data.filelist import training_files

    for file in training_files(path):  # a glob pattern: its files, in name order
        check_data_file(file)
    from deepfm.api import Estimator
    from deepfm.artifact import read_extra

    estimator = Estimator.load(directory)
    fitted_by_sklearn = read_extra(directory, "sklearn.json") or {}
    classes = fitted_by_sklearn.get("classes")
    if fitted_by_sklearn.get("sparse") and (fmt or detected_format(path)) == "libfm":
        print(f"note: {directory} holds a deepfm.sklearn model fitted on a sparse matrix, whose column numbers are its "
              "features, and this file's indices are read as those; scikit-learn's load_svmlight_file numbers a file "
              "whose indices start at 1 from 0 (zero_based='auto'): score such a file with the loader the model was "
              "fitted through", file=sys.stderr)
    task = estimator.encoder.task
    if classes and task.name == "binary" and not _zero_and_one(classes):
        read_as = (f"the column {estimator.config.data.label!r} holds its classes ({task.positive!r} is 1)"
                   if task.positive is not None else  # numbers, and text classes of a classifier saved before it read them
                   f"its labels are read as 0 and 1 from the column {estimator.config.data.label!r} (1: {classes[1]!r})")
        print(f"note: {directory} holds a deepfm.sklearn classifier of classes {classes}: {read_as}, and its prediction "
              f"is the probability of {classes[1]!r}", file=sys.stderr)
    checkpoint, weights = Path(directory) / "checkpoint", Path(directory) / "model.safetensors"
    if checkpoint.is_dir() and checkpoint.stat().st_mtime > weights.stat().st_mtime:  # an --overwrite run stopped
        print(f"note: {directory} also holds an interrupted training run's checkpoint; this is the model saved before "
              "that run started (the train command with --resume continues it)", file=sys.stderr)
    estimator.read_format = fmt  # as given, over the model's format and its own reading of a plainly other one
    return estimator


def _zero_and_one(classes: list) -> bool:
    """Whether a saved classifier's classes are 0 and 1 (as ints, floats or booleans): labels read as they are."""
    try:
        return sorted(float(c) for c in classes) == [0.0, 1.0]
    except (TypeError, ValueError):
        return False


def rows_count(text: str) -> int:
    """``--chunk-rows``: a whole number of rows, at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows, at least 1, got {text!r}")
    return int(text)


def detected_format(path: str) -> str | None:
    """The format of ``path`` (a pattern's first file) by its name and first line; None where that cannot be said."""
    from deepfm.data.filelist import training_files
    from deepfm.data.formats import detect_format
    from deepfm.errors import DataError

    try:
        return detect_format(training_files(path)[0])
    except DataError:
        return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    estimator = _load(args.dir, args.format, args.path)
    if args.label:  # the file's name for the label column (the reader's and the encoder's messages)
        config = estimator.config
        estimator.config = config.model_copy(update={"data": config.data.model_copy(update={"label": args.label})})
        estimator.encoder = dataclasses.replace(estimator.encoder, label=args.label)
    result = estimator.evaluate(args.path, args.chunk_rows)
    from deepfm.tasks import metric_text

    if args.json:
        print(json_line(result))
    else:
        print("  ".join(metric_text(k, v, ".6g") if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from deepfm.data.filelist import training_files
    from deepfm.outputs import TableFile, output_layout, writable_output
    from deepfm.scoring import write_predictions

    # before any work: a wrong --out would otherwise fail once every row is scored
    writable_output(args.out, training_files(args.path) if args.path != "-" else ())
    estimator = _load(args.dir, args.format, args.path)
    keep = [name.strip() for name in (args.keep or "").split(",") if name.strip()]
    parquet = output_layout(args.out)[0] == "parquet"
    with ended_by_signals(), TableFile(args.out) as out:
        for frame, predictions in estimator.predict_chunks(args.path, args.chunk_rows):
            write_predictions(out, frame, predictions, estimator, keep, parquet)
    if args.out != "-":
        print(f"wrote {out.rows} predictions to {args.out}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def ended_by_signals(error: Callable[[int], BaseException] = lambda number: SystemExit(128 + number)):
    """SIGTERM and SIGHUP (kill, timeout, a job scheduler, ``docker stop``, a closed terminal) raise ``error(signal)``
    while the block runs: by default the command ends as Ctrl-C does, what it opened closed and what it half wrote
    removed, with the exit status 128 + the signal's number, as the signal gives."""

    def stop(number, frame):
        raise error(number)

    if threading.current_thread() is not threading.main_thread():  # (signal handlers are the main thread's alone:
        yield  # main() called from a thread runs without them)
        return
    saved = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def resume_command(args: argparse.Namespace) -> str:
    """The ``deepfm train`` command that continues this one's run."""
    return shlex.join(["deepfm", *args.argv, *([] if args.resume else ["--resume"])])


def stopped_as_interrupted() -> contextlib.AbstractContextManager:
    """SIGTERM and SIGHUP as ``Stopped`` (a ``KeyboardInterrupt``): ``deepfm train`` ends as on Ctrl-C (what the run
    half wrote before its first checkpoint removed, else the resume hint), with the exit status 128 + the signal."""
    return ended_by_signals(Stopped)


def cmd_demo(args: argparse.Namespace) -> int:
    from deepfm.demo import run_demo

    if args.out:
        refuse_unwritable_out(Path(args.out))
    summary = run_demo(Path(args.out) if args.out else None, progress=True)
    if args.json:
        print(json_line(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="deepfm", description="FM and DeepFM for CTR and rating prediction.")
    parser.add_argument("--version", action="version", version=f"deepfm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _tune_parser(sub)
    add_compare_parser(sub)
    for name, text in (("evaluate", "metrics of a model directory on a labelled file"),
                       ("predict", "one prediction per input row, same order")):
        p = sub.add_parser(name, help=text, description=text + ". Format " + AUTO_RULE + ".")
        p.add_argument("dir", help="model directory")
        p.add_argument("path", help="data file, or a quoted glob pattern of files with the same columns ('day_*.csv.gz'), "
                                    "read in name order")
        p.add_argument("--format", choices=["auto", *FORMATS], help="override the format the model was trained with")
        p.add_argument("--chunk-rows", type=rows_count, help="about how many rows are read and scored at a time "
                                                             "(default: the model's data.chunk_rows, 65536; text is cut "
                                                             "at line ends by the first rows' length, Parquet read in "
                                                             "batches); memory holds about one chunk")
        if name == "evaluate":
            p.add_argument("--json", action="store_true", help='print one line: {"rows":N,"auc":..,"logloss":..}; '
                           'rmse, mae for regression; accuracy, logloss and macro auc for multiclass, with rmse and mae '
                           'of the expected rating for ordinal')
            p.add_argument("--label", help="this file's label column, where it is not named as in training (a model "
                                           "fitted by deepfm.sklearn names it 'label'); read as training read labels")
        else:
            p.add_argument("--out", default="-", help="output file, .csv, .tsv or .parquet (.csv.gz, .tsv.gz: gzipped); "
                           "- writes CSV to stdout. Columns: prediction (a probability, or a value); for multiclass the "
                           "most probable class and p_CLASS for each class, for ordinal also expected (the mean rating)")
            p.add_argument("--keep", help="comma-separated input columns to copy beside the prediction, in this "
                                          "order (e.g. id); from CSV into .parquet, a column of numbers as numbers, "
                                          "ids such as 007 as text, by the first chunk's rows")
    p = sub.add_parser("demo", help="train and evaluate DeepFM on built-in synthetic data (no download, < 1 minute)")
    p.add_argument("--out", help="keep the model directory here")
    p.add_argument("--json", action="store_true")
    add_production_parsers(sub)
    for name in ("train", "tune", "compare"):
        describe_config_defaults(sub.choices[name])
    return parser


COMMANDS = {"train": cmd_train, "tune": cmd_tune, "evaluate": cmd_evaluate, "predict": cmd_predict, "demo": cmd_demo, "compare": cmd_compare,
            "serve": cmd_serve, "export": cmd_export}


def entry() -> None:
    """The ``deepfm`` console script (and ``python -m deepfm``): the process settings first, before
    torch and pyarrow load (``deepfm.runtime``), then ``main`` and a hard exit, because PyArrow's and
    torch's worker threads can abort the interpreter's own shutdown ("terminate called without an
    active exception"). A reader of stdout that leaves (``deepfm predict ... | head``) ends any command
    as SIGPIPE ends a Unix tool (``end_as_sigpipe_does``)."""
    set_process_environment()
    try:
        code = main()
    except SystemExit:  # argparse after --help, --version or a usage error: its text meets a reader that left here
        flush_stdout()
        raise
    except BrokenPipeError:  # stdout's reader left while a command wrote
        end_as_sigpipe_does()
    flush_stdout()  # what print left in the buffer (evaluate, --json lines) meets a reader that left here
    sys.stderr.flush()
    os._exit(code)


def say_line(text: str) -> None:
    """``text`` and its line end on stderr in one write: ranks of ``--nproc`` that say it at once (print writes the
    two apart) do not run their lines into one another."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def flush_stdout() -> None:
    """Write out what stdout's buffer holds; a reader that left ends the command (``end_as_sigpipe_does``). No
    stdout at all (its descriptor closed: ``deepfm --version >&-``) has nothing to write."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        end_as_sigpipe_does()


def end_as_sigpipe_does() -> NoReturn:
    """Stdout's reader left: stop at once, with no traceback or error text and the status of a process that SIGPIPE
    ended (a shell shows 141), as coreutils do. Python ignores SIGPIPE, so that a write raises BrokenPipeError; its
    default action is restored only here, at the end, because ``serve``'s and the ranks' sockets would die of it (the
    Python docs' "Note on SIGPIPE"). Nothing more is flushed into the pipe. Windows has no SIGPIPE: status 1, Python's
    own on EPIPE."""
    sys.stderr.flush()
    sigpipe = getattr(signal, "SIGPIPE", None)
    if sigpipe is not None:
        signal.signal(sigpipe, signal.SIG_DFL)
        os.kill(os.getpid(), sigpipe)
    os._exit(1 if sigpipe is None else 128 + sigpipe)  # (POSIX: only where a thread blocks the signal)


def _show_warning(message, category, filename, lineno, file=None, line=None, shown=warnings.showwarning) -> None:
    """``DataWarning`` and ``SettingWarning`` as the CLI's other notes (``note: ...`` on stderr); other warnings as
    Python shows them."""
    if issubclass(category, (DataWarning, SettingWarning)):
        print(f"note: {message}", file=sys.stderr)
    else:
        shown(message, category, filename, lineno, file, line)


def under_torchrun() -> bool:
    """Whether torchrun started this process (it sets ``RANK`` and ``WORLD_SIZE``, one rank or several)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_rank() -> int:
    """This process's rank under torchrun; 0 otherwise: a ``RANK`` that a scheduler or container exports for its own
    use, without ``WORLD_SIZE``, had silenced train and left its checkpoint behind."""
    try:
        return int(os.environ["RANK"]) if under_torchrun() else 0
    except ValueError:
        return 0


STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}  # a full disk or quota, a read-only or failing
# file system: one line and exit status 1, not a traceback


def main(argv: Sequence[str] | None = None) -> int:
    stop_with_the_launcher()  # a rank of deepfm --nproc: not one second longer than its launcher
    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # a rank of --nproc goes with its launcher, which speaks for the run (torchrun's handlers pass signals on)
    stopping = (stopped_as_interrupted() if args.command in ("train", "tune", "compare") and not started_by_launch()
                else contextlib.nullcontext())  # (a scheduler's SIGTERM: what Ctrl-C saves, tune's search and compare's
    # finished runs, is saved too)
    try:
        with stopping:
            return COMMANDS[args.command](args)
    except DeepFMError as error:
        say_line(str(error))
        return 2
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise
        say_line(f"{error.filename}: {error.strerror}" if error.filename else error.strerror or str(error))
        return 1  # (the machine's, not the input's: the same command may pass once there is room)
    except KeyboardInterrupt as interrupt:  # Ctrl-C; SIGTERM or SIGHUP (``Stopped``) in train, tune and compare
        code = 128 + getattr(interrupt, "signal_number", signal.SIGINT)
        if started_by_launch() or torchrun_rank() != 0:
            return code  # a rank: the launcher (deepfm --nproc), or rank 0 of a torchrun by hand, speaks for it
        out = getattr(args, "out", None) if args.command == "train" else None
        from deepfm.resumable import checkpoint_saved  # no torch import in the handler

        nothing_saved = out is not None and not checkpoint_saved(Path(out))
        if nothing_saved and hasattr(args, "out_existed") and torchrun_rank() == 0:
            with contextlib.suppress(OSError):  # under --nproc the launcher and rank 0 may both clear it
                forget_unsaved_run(Path(out), args.out_existed)  # the same command runs again
        again = resume_command(args) if args.command == "train" else ""
        if under_torchrun():  # rank 0 of a torchrun started by hand: its own command line is torchrun's
            again = f"the same torchrun command, its deepfm part: {again}"
        say_line("interrupted before the first checkpoint: nothing to resume" if nothing_saved else
                 f"interrupted; resume with: {again}" if args.command == "train" else "interrupted")
        return code


if __name__ == "__main__":
    entry()
