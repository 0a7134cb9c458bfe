"""Write a comparison as DIR/results.json, DIR/results.md and PNG plots.

Binary tasks report test AUC and logloss, plot validation AUC per epoch and test ROC curves;
regression reports RMSE and MAE, plots validation RMSE per epoch and has no ROC curve.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deepfm.experiments.compare import EncodedSplits, VariantResult

METRICS = {"binary": ("auc", "logloss"), "regression": ("rmse", "mae")}


def machine(results: list[VariantResult]) -> str:
    """Where the train times of ``results`` were measured: this host's usable cores, the threads each model trained on
    (its config's ``training.threads``; 0: all), grouped, and the GPU, if any."""
    import torch

    from deepfm.runtime import available_cores

    cores = available_cores()
    by_threads: dict[int, list[str]] = {}
    for r in results:
        threads = int((r.config or {}).get("training", {}).get("threads") or 0) or cores
        names = by_threads.setdefault(threads, [])
        if r.label not in names:
            names.append(r.label)
    shown = "; ".join(f"{', '.join(names)} on {n}" for n, names in sorted(by_threads.items()))
    where = f"{cores} usable CPU core{'s' if cores != 1 else ''} (threads: {shown or 'none'})"
    return where + (f" and a {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")


LIBRARIES = ("numpy", "pyarrow", "numba", "scikit-learn", "optuna")  # whose versions move a report's figures too


def versions() -> dict[str, Any]:
    """What a report's figures came from: deepfm's version and, run from a git checkout, its commit (and whether files
    differed from it), torch's, Python's and the other libraries' versions, and the CPU (another sums in another
    order)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from deepfm import __version__

    found = {"deepfm": __version__, **git_commit(), "torch": torch.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found | {"cpu": cpu_model()}


def git_commit() -> dict[str, Any]:
    """``{"commit": ..., "uncommitted_changes": bool}`` of the git checkout deepfm runs from; empty where it is not
    in one (an installed wheel) or git is missing."""
    import subprocess

    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", str(Path(__file__).resolve()))  # deepfm's own checkout, not a repository
        # that happens to hold the environment it is installed in
        return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "-uno"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux), else what the platform says."""
    import platform

    try:
        with open(cpuinfo) as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def results_dict(results: list[VariantResult], data: EncodedSplits, title: str, command: str | None,
                 files: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as JSON; ``files``: each data file's path, size and SHA-256 (``data_checksums``), by split."""
    task = data.encoder.task.name
    return {
        "title": title,
        "command": command,
        **({"files": files} if files else {}),
        "task": task,
        "rows": {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
        **({"valid_held_out": data.holdout.to_dict()} if data.holdout is not None else {}),
        "num_features": data.encoder.num_features,
        "num_fields": data.encoder.num_fields,
        "seeds": len(results[0].runs) if results else 0,
        "machine": machine(results),
        "versions": versions(),
        "variants": [
            {
                "label": r.label,
                "model": r.model,
                "parameters": r.parameters,
                "test": {m: dict(zip(("mean", "std"), r.summary(m))) for m in METRICS[task]},
                "train_seconds": dict(zip(("mean", "std"), _mean_std([run.train_seconds for run in r.runs]))),
                "runs": [
                    {"seed": run.seed, "test": run.test, "train_seconds": round(run.train_seconds, 3),
                     "best_epoch": run.best_epoch, "history": run.history}
                    for run in r.runs
                ],
                "config": r.config,
            }
            for r in results
        ],
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _cell(mean: float, std: float, seeds: int, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def row_kind(summary: dict[str, Any]) -> str:
    """What the report's rows are: models, or a --study's settings of one model."""
    return "model" if all(v["label"] == v["model"] for v in summary["variants"]) else "setting"


def markdown_table(summary: dict[str, Any]) -> str:
    """The comparison table: one row per variant, metrics as mean ± std over seeds."""
    task, seeds = summary["task"], summary["seeds"]
    first, second = METRICS[task]
    lines = [f"| {row_kind(summary)} | test {first} | test {second} | train time (s) | parameters | best epoch(s) |",
             "|---|---|---|---|---|---|"]
    for v in summary["variants"]:
        epochs = ",".join(str(run["best_epoch"]) for run in v["runs"])
        lines.append(
            f"| {v['label']} | {_cell(v['test'][first]['mean'], v['test'][first]['std'], seeds)} "
            f"| {_cell(v['test'][second]['mean'], v['test'][second]['std'], seeds)} "
            f"| {_cell(v['train_seconds']['mean'], v['train_seconds']['std'], seeds, 1)} "
            f"| {v['parameters']:,} | {epochs} |")
    return "\n".join(lines)


def settings_table(summary: dict[str, Any]) -> str:
    """What each variant trained with (the settings ``deepfm train --portfolio off`` gives its model on this data),
    where the models differ: the paper compared them at one setting, these are each model's own defaults."""
    lines = [f"| {row_kind(summary)} | k | tables: optimizer, lr, L2 | MLP | MLP step | batch, epochs, patience |",
             "|---|---|---|---|---|---|"]
    for v in summary["variants"]:
        model, training = v["config"]["model"], v["config"]["training"]
        has_mlp = v["model"] not in ("lr", "fm")
        mlp = (f"{'-'.join(map(str, model['mlp']))}, dropout {model['dropout']:g}"
               f"{', batch norm' if model['batch_norm'] else ''}" if has_mlp else "—")
        dense = (f"{training['dense_optimizer'] or training['optimizer']} {training['dense_lr'] or training['lr']:g}"
                 if has_mlp else "—")
        k = "—" if v["model"] == "lr" else model["embed_dim"]
        lines.append(f"| {v['label']} | {k} | {training['optimizer']} {training['lr']:g}, {training['embed_l2']:g} "
                     f"({training['embed_reg']}) | {mlp} | {dense} | {training['batch_size']}, {training['epochs']}, "
                     f"{training['patience']} |")
    return "\n".join(lines)


def write_markdown(summary: dict[str, Any], path: Path, plots: list[str]) -> None:
    rows = summary["rows"]
    text = [f"# {summary['title']}", ""]
    if summary.get("command"):
        text += ["```", summary["command"], "```", ""]
    held = summary.get("valid_held_out")
    valid = f"valid {rows['valid']:,}" + (f" (held out of the training file: about {held['fraction']:g} of its rows, "
                                          f"{held['rule']}, seed {held['seed']})" if held else "")
    text += [f"Task: {summary['task']}. Rows: train {rows['train']:,}, {valid}, test {rows['test']:,}. "
             f"Features: {summary['num_features']:,} in {summary['num_fields']} fields. "
             f"Seeds: {summary['seeds']}" + (" (mean ± sample std)." if summary["seeds"] > 1 else "."),
             "The best epoch is chosen on validation; test is scored once with its weights. "
             f"Train time is wall time on {summary.get('machine', 'this machine')}"
             + (" (FNN: FM pre-training included)" if any(v["model"] == "fnn" for v in summary["variants"]) else "")
             + "; on a fresh install a model's first run also compiles its training passes once (numba; cached "
               "for later runs), so a first seed's time can stand out.",
             "", markdown_table(summary), "",
             "Each model trained with the settings `deepfm train --portfolio off` gives it for this data (its first "
             "recipe), except one budget for all (batch size, epochs, patience); results.json holds every setting:", "",
             settings_table(summary), ""]
    text += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def plot_validation_curves(summary: dict[str, Any], path: Path) -> None:
    """Validation metric per epoch, first seed of every variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = METRICS[summary["task"]][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in summary["variants"]:
        history = v["runs"][0]["history"]
        ax.plot([h["epoch"] for h in history], [h["valid"][metric] for h in history], marker="o", label=v["label"])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric.upper()}")
    ax.set_title(f"{summary['title']}: validation {metric.upper()} per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(results: list[VariantResult], labels: np.ndarray, title: str, path: Path) -> None:
    """Test ROC curves of every variant's first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for r in results:
        scores = r.runs[0].test_predictions
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{r.label} (AUC {roc_auc_score(labels, scores):.4f})", linewidth=1.2)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title}: test ROC (first seed)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: list[VariantResult], data: EncodedSplits, out: Path, title: str,
                 command: str | None = None, files: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json, results.md, validation_curves.png and (binary) roc.png under ``out``; an earlier report's roc.png
    that this one does not write is removed (``--overwrite``: no plot of another run is left beside it)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = results_dict(results, data, title, command, files)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plots = [out / "validation_curves.png"]
    plot_validation_curves(summary, plots[0])
    if summary["task"] == "binary" and 0 < data.test.labels.sum() < len(data.test.labels):
        plots.append(out / "roc.png")
        plot_roc(results, data.test.labels, title, plots[1])
    else:
        (out / "roc.png").unlink(missing_ok=True)
    write_markdown(summary, out / "results.md", [str(p) for p in plots])
    return summary
