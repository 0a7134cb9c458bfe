"""An independent same-split reference for Frappe: plain PyTorch FM and DeepFM from the papers (no deepfm import).

    python benchmarks/reference_frappe.py run --model fm [--lr 0.1 --l2 1e-2 --k 64 --batch 512 ...] [--test]
    python benchmarks/reference_frappe.py seeds --model deepfm --seeds 2026 7 11 13 17          # test read once per seed
    python benchmarks/reference_frappe.py search --model fm --timeout 600 --out results/X.json   # valid only; then test once

The issue-12 recipe is the default: AdaGrad lr 0.1 on every weight, batch 512, k 64, L2 1e-2 per
occurrence (λ · mean over the batch of Σ_f (‖v_f‖² + w_f²), the rows the batch looks up, so an id is
held back in proportion to how often it occurs), early stopping on validation AUC (patience 2, the
best epoch's weights kept), at most 50 epochs, one intra-op thread; DeepFM's MLP 400-400-400 (the paper's widths),
ReLU, no dropout or batch norm (the recipe names none; ``--dropout 0.5`` is the paper's).

Models, as the papers write them (one id per field, x_i = 1):
- FM (Rendle 2010): ŷ = w0 + Σ_f w_f + ½ Σ_k [(Σ_f v_fk)² − Σ_f v_fk²].
- DeepFM (Guo et al. 2017): ŷ = FM(x) + MLP(concat_f v_f), the embeddings shared; the MLP is ReLU
  layers (optional batch norm, dropout) and a linear output. V starts at N(0, 0.01²), w and w0 at 0.

Data: the shared libFM files (label, then one global ``id:1`` per field). Ids unseen in train/valid
map to one extra row that is never trained. ``search`` is Optuna (TPE, seeded; successive halving
on each epoch's validation AUC: the top third of all trials at epochs 2, 6, 18 go on) over the optimiser
and its lr, L2, k, batch and, for DeepFM, the hybrid optimiser (AdaGrad on the FM's weights, Adam on the
MLP, ``--optimizer hybrid --dense-lr``), dropout, MLP widths and batch norm; trial 0 is the recipe. It
never reads the test split; with ``--score-test`` the best-by-validation trial's weights (kept in
memory) score it once at the end. Every command prints JSON; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import log_loss, roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

from accuracy_stats import auc_standard_error, spread  # noqa: E402

FRAPPE = Path("/work/shared/datasets/frappe")


@dataclass(frozen=True)
class Recipe:
    """One training recipe; the defaults are issue 12's reference."""

    model: str = "fm"
    optimizer: str = "adagrad"  # adagrad | adam (every weight) | hybrid (DeepFM: AdaGrad on V, w, w0; Adam on the MLP)
    lr: float = 0.1
    dense_lr: float = 1e-3  # hybrid only: the MLP's Adam step
    l2: float = 1e-2  # per occurrence, on the looked-up rows of V and w
    k: int = 64
    batch: int = 512
    mlp: str = "400,400,400"  # DeepFM only
    dropout: float = 0.0  # DeepFM only: the recipe names none (the paper's 0.5: valid 0.9453 at seed 2026)
    batch_norm: bool = False
    seed: int = 2026
    patience: int = 2
    max_epochs: int = 50


# -- data -----------------------------------------------------------------------------------------


def read_libfm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids: (N, F) int64 global ids, labels: (N,) float32 in {0, 1}) of a libFM file with one id per field."""
    lines = path.read_text().split("\n")
    rows = [line.split() for line in lines if line.strip()]
    labels = np.asarray([float(r[0]) > 0 for r in rows], dtype=np.float32)
    ids = np.asarray([[int(item.split(":", 1)[0]) for item in r[1:]] for r in rows], dtype=np.int64)
    return ids, labels


class Splits:
    """Train and valid read at once; test only when asked (``test()``), its unseen ids on the spare row."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.train = read_libfm(root / "train.libfm")
        self.valid = read_libfm(root / "valid.libfm")
        self.unseen = int(max(self.train[0].max(), self.valid[0].max())) + 1
        self.rows = self.unseen + 1

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        ids, labels = read_libfm(self.root / "test.libfm")
        return np.where(ids < self.unseen, ids, self.unseen), labels


# -- models ---------------------------------------------------------------------------------------


class FM(nn.Module):
    """Rendle's FM on one-hot fields; ``forward`` returns the logit and the looked-up rows (for the L2)."""

    def __init__(self, rows: int, k: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.w = nn.Embedding(rows, 1)
        self.v = nn.Embedding(rows, k)
        nn.init.zeros_(self.w.weight)
        nn.init.normal_(self.v.weight, std=0.01)

    def terms(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w, v = self.w(ids).squeeze(-1), self.v(ids)  # (B, F), (B, F, k)
        pairwise = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1)
        logit = self.bias + w.sum(1) + pairwise
        penalty = (v.pow(2).sum((1, 2)) + w.pow(2).sum(1)).mean()  # per occurrence: a mean over the batch
        return logit, penalty, v

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, penalty, _ = self.terms(ids)
        return logit, penalty


class DeepFM(FM):
    """Guo et al.'s DeepFM: the FM above plus an MLP over the concatenated (shared) embeddings."""

    def __init__(self, rows: int, k: int, fields: int, widths: list[int], dropout: float, batch_norm: bool) -> None:
        super().__init__(rows, k)
        layers: list[nn.Module] = []
        width_in = fields * k
        for width in widths:
            layers.append(nn.Linear(width_in, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, penalty, v = self.terms(ids)
        return logit + self.mlp(v.flatten(1)).squeeze(-1), penalty


def build(recipe: Recipe, rows: int, fields: int) -> FM:
    if recipe.model == "fm":
        return FM(rows, recipe.k)
    widths = [int(w) for w in recipe.mlp.split(",") if w]
    return DeepFM(rows, recipe.k, fields, widths, recipe.dropout, recipe.batch_norm)


class Hybrid:
    """FM-style AdaGrad (lr) on the FM's weights (V, w, w0) and Adam (dense_lr) on the MLP, stepped together."""

    def __init__(self, model: DeepFM, lr: float, dense_lr: float) -> None:
        tables = [model.bias, model.w.weight, model.v.weight]
        self.parts = [torch.optim.Adagrad(tables, lr=lr), torch.optim.Adam(model.mlp.parameters(), lr=dense_lr)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()


def optimizer_for(recipe: Recipe, model: nn.Module):
    if recipe.optimizer == "hybrid":
        if not isinstance(model, DeepFM):
            raise ValueError("--optimizer hybrid steps an MLP apart: DeepFM only")
        return Hybrid(model, recipe.lr, recipe.dense_lr)
    if recipe.optimizer == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=recipe.lr)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr)


# -- training -------------------------------------------------------------------------------------


@torch.no_grad()
def probabilities(model: nn.Module, ids: np.ndarray, batch: int = 8192) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(torch.from_numpy(ids[s:s + batch]))[0]).numpy() for s in range(0, len(ids), batch)]
    model.train()
    return np.concatenate(out).astype(np.float64)


def train(recipe: Recipe, splits: Splits, on_epoch=None) -> tuple[nn.Module, dict]:
    """Train ``recipe`` with early stopping on validation AUC; the best epoch's weights are returned.
    ``on_epoch(epoch, valid_auc)`` is called after each epoch (a pruner may raise there)."""
    torch.manual_seed(recipe.seed)
    order_rng = np.random.default_rng(recipe.seed)
    (x, y), (vx, vy) = splits.train, splits.valid
    model = build(recipe, splits.rows, x.shape[1])
    optimizer = optimizer_for(recipe, model)
    loss_fn = nn.BCEWithLogitsLoss()
    best_auc, best_state, best_epoch, history = -math.inf, None, 0, []
    began = time.perf_counter()
    for epoch in range(1, recipe.max_epochs + 1):
        order = order_rng.permutation(len(x))
        for start in range(0, len(x), recipe.batch):
            rows = order[start:start + recipe.batch]
            if recipe.batch_norm and len(rows) < 2:
                continue
            logit, penalty = model(torch.from_numpy(x[rows]))
            loss = loss_fn(logit, torch.from_numpy(y[rows])) + recipe.l2 * penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        predicted = probabilities(model, vx)
        auc = float(roc_auc_score(vy, predicted)) if np.isfinite(predicted).all() else float("nan")
        history.append(round(auc, 5))
        if on_epoch is not None:
            on_epoch(epoch, auc)
        if auc > best_auc:
            best_auc, best_state, best_epoch = auc, copy.deepcopy(model.state_dict()), epoch
        elif not epoch - best_epoch < recipe.patience or not math.isfinite(auc):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    predicted = probabilities(model, vx)
    record = {"recipe": asdict(recipe), "valid_auc_by_epoch": history, "best_epoch": best_epoch,
              "epochs": len(history), "valid_auc": float(roc_auc_score(vy, predicted)),
              "valid_logloss": float(log_loss(vy, np.clip(predicted, 1e-7, 1 - 1e-7))),
              "train_seconds": round(time.perf_counter() - began, 1)}
    return model, record


def score_test(model: nn.Module, splits: Splits) -> dict:
    """The test split's AUC (with its DeLong standard error) and logloss: read once, for the report."""
    ids, labels = splits.test()
    predicted = probabilities(model, ids)
    auc, se = auc_standard_error(labels, predicted)
    return {"test_auc": auc, "test_auc_se": se, "test_logloss": float(log_loss(labels, np.clip(predicted, 1e-7, 1 - 1e-7)))}


# -- search ---------------------------------------------------------------------------------------

MLPS = ("200,200", "400,400", "200,200,200", "400,400,400")


def drawn_recipe(trial, base: Recipe) -> Recipe:
    """One trial's recipe: the optimiser and its lr range, the L2, k, batch; DeepFM's MLP settings (with
    the hybrid optimiser, the MLP's Adam step)."""
    optimizer = trial.suggest_categorical("optimizer", ["adagrad", "adam", *(["hybrid"] if base.model == "deepfm" else [])])
    adagrad_lr = optimizer in ("adagrad", "hybrid")
    lr = trial.suggest_float(f"lr_{optimizer}", *((1e-2, 0.5) if adagrad_lr else (1e-4, 3e-2)), log=True)
    if optimizer == "hybrid":
        lr_settings = {"dense_lr": trial.suggest_float("dense_lr", 1e-4, 1e-2, log=True)}
    else:
        lr_settings = {}
    settings = {"optimizer": optimizer, "lr": lr, **lr_settings, "l2": trial.suggest_float("l2", 1e-4, 1e-1, log=True),
                "k": trial.suggest_categorical("k", [16, 32, 64, 128]),
                "batch": trial.suggest_categorical("batch", [128, 256, 512, 1024, 2048])}
    if base.model == "deepfm":
        settings |= {"mlp": trial.suggest_categorical("mlp", list(MLPS)),
                     "dropout": trial.suggest_float("dropout", 0.0, 0.5),
                     "batch_norm": trial.suggest_categorical("batch_norm", [False, True])}
    return replace(base, **settings)


def recipe_params(recipe: Recipe) -> dict:
    """``recipe`` as a trial's params (to enqueue it)."""
    params = {"optimizer": recipe.optimizer, f"lr_{recipe.optimizer}": recipe.lr, "l2": recipe.l2, "k": recipe.k,
              "batch": recipe.batch}
    if recipe.optimizer == "hybrid":
        params["dense_lr"] = recipe.dense_lr
    if recipe.model == "deepfm":
        params |= {"mlp": recipe.mlp, "dropout": recipe.dropout, "batch_norm": recipe.batch_norm}
    return params


def search(base: Recipe, splits: Splits, timeout: float, trials: int | None, score: bool) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=5, multivariate=True),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3))
    study.enqueue_trial(recipe_params(base))
    best: dict = {"value": -math.inf}
    records = []

    def objective(trial) -> float:
        recipe = drawn_recipe(trial, base)

        def report(epoch: int, auc: float) -> None:
            trial.report(auc if math.isfinite(auc) else 0.0, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        model, record = train(recipe, splits, report)
        if record["valid_auc"] > best["value"]:
            best.update(value=record["valid_auc"], model=model, record=record, number=trial.number)
        return record["valid_auc"]

    def progress(study, trial) -> None:
        records.append({"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
                        "valid_auc": trial.value, "per_epoch": trial.intermediate_values,
                        "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None})
        print(json.dumps(records[-1]), file=sys.stderr, flush=True)

    began = time.perf_counter()
    study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[progress])
    result = {"command": "search", "model": base.model, "timeout_s": timeout, "seconds": round(time.perf_counter() - began, 1),
              "trials": records, "best_trial": best.get("number"), "best": best.get("record")}
    if score and "model" in best:
        result["best"] |= score_test(best["model"], splits)
    return result


# -- command line ---------------------------------------------------------------------------------


def recipe_from(args: argparse.Namespace) -> Recipe:
    given = {key: getattr(args, key) for key in Recipe.__dataclass_fields__ if getattr(args, key, None) is not None}
    return Recipe(**given)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "seeds", "search"])
    parser.add_argument("--data", type=Path, default=FRAPPE)
    for key, field in Recipe.__dataclass_fields__.items():
        kind = (lambda text: text in ("1", "true", "yes")) if field.type in (bool, "bool") else \
            {"int": int, "float": float, "str": str}.get(str(field.type), str)
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, default=None)
    parser.add_argument("--test", action="store_true", help="run: score the test split once")
    parser.add_argument("--seeds", nargs="*", type=int, default=[2026, 7, 11, 13, 17])
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--score-test", action="store_true", help="search: score the best-by-validation trial on test once")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    splits, recipe = Splits(args.data), recipe_from(args)
    if args.command == "run":
        model, result = train(recipe, splits)
        if args.test:
            result |= score_test(model, splits)
    elif args.command == "seeds":
        runs = []
        for seed in args.seeds:
            model, record = train(replace(recipe, seed=seed), splits)
            runs.append(record | score_test(model, splits))
            print(json.dumps({k: runs[-1][k] for k in ("best_epoch", "valid_auc", "test_auc", "test_auc_se")} | {"seed": seed}),
                  file=sys.stderr, flush=True)
        result = {"command": "seeds", "recipe": asdict(recipe), "runs": runs,
                  "valid_auc": spread([r["valid_auc"] for r in runs]), "test_auc": spread([r["test_auc"] for r in runs]),
                  "test_logloss": spread([r["test_logloss"] for r in runs]),
                  "test_auc_se": float(np.mean([r["test_auc_se"] for r in runs]))}
    else:
        result = search(recipe, splits, args.timeout, args.trials, args.score_test)
    result["load_at_end"] = round(os.getloadavg()[0], 1)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text if args.command != "seeds" else json.dumps({k: result[k] for k in ("valid_auc", "test_auc", "test_auc_se")}))
    return result


if __name__ == "__main__":
    main()
