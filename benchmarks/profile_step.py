"""Where a DeepFM training step spends its time (1M-row Criteo-shaped data, batch 4096).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/profile_step.py [DATA_DIR] [--steps 30]
        [--precision fp32|bf16] [--setting defaults|stripped] [--categorical] [--overheads] [--ceiling] [--first-layer] [--padded-input-gradient]
        [--narrow-fields] [--tables]
        [--floor WIDTH]

Two views: wall time per phase of the step (making the batch, forward,
backward, sparse and dense optimiser), and torch.profiler self-CPU time grouped by what
the operators do. Writes the summary to benchmarks/profiles/deepfm_step_{precision}[_defaults][_longtail].txt.
``--setting defaults`` profiles the model at the library's defaults (dropout and batch norm
included), ``--categorical`` reads the I columns as categorical (the long-tail shape).

``--overheads`` instead times the regularisers: four DeepFMs on the same batches (no dropout or
batch norm; dropout only; batch norm only; both, as the defaults), their steps interleaved in one
process so that a busy machine slows them alike; prints the median step of each and the extra
time of dropout and of batch norm as a share of the step (wall and CPU time: on a shared machine
the process's CPU time moves less with the load than its wall time).

``--floor WIDTH`` times the bare MLP that ``benchmarks/run.py`` divides by (WIDTH→400³→1, Adam, batch
4096) with 1 and 2 threads, with Adam's for-loop, foreach and fused updates and without an optimiser,
and the matmuls' share of its operators' time: how much a DeepFM step could gain outside the products.
``--ceiling`` interleaves the DeepFM step at the defaults with that bare MLP: run.py's "× ceiling" in one process;
and with DeepFM's own MLP alone (+ its input gradient), the most that step could reach.
``--first-layer`` interleaves the step at the defaults with and without the first Linear on the distinct rows;
``--padded-input-gradient`` with and without the first Linear's input gradient over a padded width;
``--narrow-fields`` with and without the narrow fields' columns of the first Linear on their distinct rows.
``--tables`` times the embedding table's part of a step alone (lookup, backward of one fixed upstream gradient,
optimiser step), deepfm's way against ``nn.Embedding(sparse=True)`` + ``SparseAdam`` and dense ``nn.Embedding`` + Adam,
on the same batches, interleaved (issue 13: on a long tail deepfm's path must not lose to plain tables).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from deepfm.runtime import set_process_environment  # noqa: E402 - loads neither torch nor pyarrow

set_process_environment()  # as the deepfm command does

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from deepfm.config import DataConfig, ModelConfig, RunConfig, TrainingConfig  # noqa: E402
from deepfm.defaults import with_task_defaults  # noqa: E402
from deepfm.data.batch import InMemorySource, prefetch  # noqa: E402
from deepfm.data.stream import ChunkedFile, chunk_bytes_for, encode_file, fit_streaming  # noqa: E402
from deepfm.models import build_model  # noqa: E402
from deepfm.models.deepfm import mlp_input_dtype  # noqa: E402
from deepfm.models.first_layer import first_layer_on_distinct_rows, first_layer_plan, fm_pairwise_of_rows  # noqa: E402
from deepfm.models.layers import fm_pairwise_and_mlp_input  # noqa: E402
from deepfm.runtime import configure as configure_runtime  # noqa: E402
from deepfm.training.optim import batch_occurrences, dense_optimizer  # noqa: E402
from deepfm.training.trainer import Trainer, loss_fn  # noqa: E402
from common import wait_for  # noqa: E402

HERE = Path(__file__).resolve().parent
GROUPS = (  # first match wins
    ("MLP matmuls (forward + backward)", ("aten::mm", "aten::addmm")),
    ("batch norm (+ ReLU + dropout where fused; forward + backward)", (
        "aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::_native_batch_norm_legit",
        "aten::batch_norm", "_BatchNormReluDropout", "_BatchNormReluDropoutBackward")),
    ("ReLU + dropout (mask, forward + backward)", ("aten::threshold_backward", "aten::clamp_min", "aten::clamp_min_",
                                                   "aten::relu", "aten::bitwise_and_", "aten::bitwise_or_",
                                                   "_ReluDropout", "_ReluDropoutBackward")),
    ("row-wise Adam on the tables (its NumPy gathers and puts)", ("Optimizer.step#RowWiseAdam.step",)),
    ("distinct-row lookup + its backward (NumPy gathers)", ("_LookupDistinctRows", "_LookupDistinctRowsBackward",
                                                            "_DistinctRows", "_DistinctRowsBackward", "_RowsToSlots",
                                                            "_RowsToSlotsBackward")),
    ("first Linear on the distinct rows (its own products)", ("_FirstLayerOfRows", "_FirstLayerOfRowsBackward")),
    ("distinct ids (sort, scatter)", ("aten::sort", "aten::scatter_", "aten::cumsum", "aten::ne")),
    ("embedding gather / scatter", ("aten::index_select", "aten::index_copy_", "aten::scatter_add_", "aten::index_add_",
                                    "aten::embedding", "aten::index", "aten::unique", "aten::_unique2")),
    ("optimiser element-wise", ("aten::lerp_", "aten::addcdiv_", "aten::addcmul_", "aten::sqrt", "aten::sqrt_",
                                "aten::_foreach", "aten::_fused_adam_", "aten::div", "aten::mul_", "aten::add_",
                                "aten::gt", "aten::all")),
    ("zeroing / copies", ("aten::fill_", "aten::zero_", "aten::copy_", "aten::zeros", "aten::empty")),
)
PROFILED = ("aten::", "Optimizer", "_LookupDistinctRows", "_DistinctRows", "_RowsToSlots", "_FirstLayerOfRows",
            "_ReluDropout", "_BatchNormReluDropout")  # the events grouped (self time)


# benchmarks/tasks.py's stripped setting: the paper's architecture without regularisers.
STRIPPED = {"model": {"embed_dim": 10, "dropout": 0.0, "batch_norm": False}, "training": {"lr": 1e-3, "embed_l2": 1e-6}}


def click_settings(encoder, precision: str, setting: str = "defaults", **model_options) -> tuple[ModelConfig, TrainingConfig]:
    """DeepFM's model and training settings on clicks for this data, as ``deepfm train`` resolves them
    (task defaults, then the data rule from the encoder's id counts: k 64 where ids recur, k 10 on a
    long tail), batch 4096, one epoch; ``setting="stripped"`` as benchmarks/tasks.py's stripped rows.
    ``model_options`` (e.g. ``dropout=0.0``) are set as a user would."""
    extra = STRIPPED if setting == "stripped" else {"model": {}, "training": {}}
    config = RunConfig(model=ModelConfig(name="deepfm", **extra["model"], **model_options),
                       training=TrainingConfig(batch_size=4096, epochs=1, precision=precision, **extra["training"]))
    config = with_task_defaults(config, "binary", encoder.id_counts)
    return config.model, config.training


def describe(model: ModelConfig, training: TrainingConfig) -> str:
    return (f"k {model.embed_dim}, MLP {model.mlp}, dropout {model.dropout}, batch norm {model.batch_norm}, "
            f"tables {training.optimizer} lr {training.lr:g}, MLP lr {training.dense_lr or training.lr:g}, "
            f"embed L2 {training.embed_l2:g} per {training.embed_reg}")


def group_of(name: str) -> str:
    for group, prefixes in GROUPS:
        if any(name == p or name.startswith(p + ".") or (p.endswith("_foreach") and name.startswith(p)) for p in prefixes):
            return group
    return "FM term, loss, other small ops"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(HERE / ".data"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--setting", choices=["defaults", "stripped"], default="stripped")
    parser.add_argument("--categorical", action="store_true", help="read the I columns as categorical")
    parser.add_argument("--overheads", action="store_true", help="time dropout and batch norm, interleaved")
    parser.add_argument("--floor", type=int, metavar="WIDTH",
                        help="time the bare MLP WIDTH→400³→1 + Adam (the ceiling) with 1 and 2 threads instead")
    parser.add_argument("--min-count", type=int, default=None,
                        help="data.min_count (default: unset, the data rule's: 10 on a long tail; 1 keeps every value)")
    parser.add_argument("--first-layer", action="store_true",
                        help="the trainer's step with the first Linear on the distinct rows and without, interleaved")
    parser.add_argument("--padded-input-gradient", action="store_true",
                        help="the trainer's step with the first Linear's input gradient padded and without, interleaved")
    parser.add_argument("--narrow-fields", action="store_true",
                        help="interleave the step at the defaults with and without the narrow fields' first-layer form")
    parser.add_argument("--tables", action="store_true",
                        help="the table's part of a step: deepfm's lookup + row-wise Adam against nn.Embedding + SparseAdam / Adam")
    parser.add_argument("--device", default="cpu",
                        help="where the step runs (cuda: each phase waits for the GPU, and the profile adds its kernels)")
    parser.add_argument("--ceiling", action="store_true",
                        help="interleave the DeepFM step at the defaults with the bare-MLP ceiling: the × ceiling of one process")
    parser.add_argument("--json", action="store_true", help="with --ceiling: also a JSON line of the figures (run.py's row)")
    args = parser.parse_args()
    if args.device != "cpu" and (args.floor or args.overheads or args.ceiling or args.first_layer or args.padded_input_gradient
                                 or args.narrow_fields or args.tables):
        parser.error("--device other than cpu times the trainer's step only (no --floor, --overheads, --ceiling, "
                     "--first-layer or --padded-input-gradient)")
    if args.floor:
        return floor(args.floor, args.steps)
    configure_runtime(0)
    path = Path(args.data) / "train.csv"
    file = ChunkedFile(path, chunk_bytes=chunk_bytes_for(path, 65_536))
    numeric = () if args.categorical else tuple(f"I{i}" for i in range(1, 14))
    encoder, rows = fit_streaming(file, DataConfig(numeric=numeric, min_count=args.min_count))
    print(f"data.min_count {encoder.id_counts.min_count}: {encoder.id_counts.kept:,} of {encoder.id_counts.distinct:,} "
          f"values keep their own id ({encoder.num_features:,} table rows)")
    data = encode_file(file, encoder, rows)
    if args.overheads:
        return overheads(data, encoder, args)
    if args.ceiling:
        return against_ceiling(data, encoder, args)
    if args.first_layer:
        return first_layer_on_and_off(data, encoder, args)
    if args.padded_input_gradient:
        return padded_input_gradient_on_and_off(data, encoder, args)
    if args.narrow_fields:
        return narrow_fields_on_and_off(data, encoder, args)
    if args.tables:
        return table_paths(data, encoder, args)
    model_config, training = click_settings(encoder, args.precision, args.setting)
    device = torch.device(args.device)
    training = training.model_copy(update={"device": args.device})
    model = build_model(model_config, encoder.num_features, encoder.num_fields)
    trainer = Trainer(model, "binary", training, progress=False)

    def now() -> tuple[float, float]:
        """(wall, CPU) clocks once the device has done what was asked of it."""
        wait_for(device)
        return time.perf_counter(), time.process_time()

    optimizers = trainer.optimizer.optimizers
    chunks = InMemorySource(data).batches(4096, seed=0, epoch=0)  # made inline, to time them as phases (Trainer makes them ahead on a thread)
    phases: dict[str, float] = defaultdict(float)
    cpu_phases: dict[str, float] = defaultdict(float)

    def step(timed: bool) -> None:
        clock, cpu_clock = now()
        marks = []
        batch = next(chunks).to_batch(device)
        marks.append(("make the batch (gather rows, tensors)", *now()))
        batch.prepare()
        marks.append(("distinct ids + slot grouping (+ design matrix)", *now()))
        trainer.optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.bf16):  # DeepFM.forward, phase by phase
            first = model.dnn.first_linear
            plan = first_layer_plan(model.embedding, model.dnn, batch)
            if plan is not None:  # the first Linear on the distinct rows (k wide, rows recurring), as mlp_on_distinct_rows
                bias_cancels = model.dnn.first_bias_cancels(len(plan.distinct.inverse), torch.float32, "cpu")
                rows, hidden = first_layer_on_distinct_rows(model.embedding, first, batch, plan, with_bias=not bias_cancels)
            else:
                embedded = model.embedding(batch)
            marks.append(("forward: embedding gather to (B, F, k) (+ first Linear on distinct rows)", *now()))
            if plan is not None:
                pairwise = fm_pairwise_of_rows(rows, batch, plan)
            else:
                pairwise, dnn_input = fm_pairwise_and_mlp_input(embedded, 1, mlp_input_dtype(embedded.fields, first))
            y_fm = model.linear(batch) + pairwise
            marks.append(("forward: FM term (first order + pairwise)", *now()))
            if plan is not None:
                deep = model.dnn(hidden, after_first_linear=True, first_bias_left_out=bias_cancels)
            else:
                deep = model.dnn(dnn_input)
            logits = y_fm + deep.squeeze(-1)
        loss = loss_fn("binary", logits.float(), batch.labels)
        marks.append(("forward: MLP (linear, batch norm, ReLU + dropout), loss", *now()))
        loss.backward()
        marks.append(("backward", *now()))
        if trainer.optimizer.per_occurrence:
            trainer.optimizer.add_occurrence_penalty(batch_occurrences(batch))
            marks.append(("per-occurrence L2 (handed to the row-wise step)", *now()))
        optimizers["sparse"].step()
        marks.append(("row-wise Adam on the touched rows (+ the L2)", *now()))
        optimizers["dense"].step()
        marks.append(("Adam on the MLP", *now()))
        float(loss.detach())
        if timed:
            for name, at, cpu_at in marks:
                phases[name] += at - clock
                cpu_phases[name] += cpu_at - cpu_clock
                clock, cpu_clock = at, cpu_at

    for _ in range(5):
        step(False)
    began = time.perf_counter()
    for _ in range(args.steps):
        step(True)
    total = time.perf_counter() - began
    lines = [f"DeepFM step ({args.precision}, {args.setting}: {describe(model_config, training)}), batch 4096, {args.steps} steps, "
             f"{torch.get_num_threads()} threads, {args.device}: "
             f"{total / args.steps * 1e3:.1f} ms/step = {args.steps * 4096 / total:,.0f} samples/s", "",
             "Wall time per phase:"]
    cpu_total = sum(cpu_phases.values())
    lines += [f"  {name:<45} {t / args.steps * 1e3:6.1f} ms  {t / total:6.1%}   CPU {cpu_phases[name] / args.steps * 1e3:6.1f} ms "
              f"{cpu_phases[name] / cpu_total:6.1%}" for name, t in phases.items()]
    profiled = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
        for _ in range(10):
            step(False)
    profiled = (time.perf_counter() - profiled) * 1e6  # µs, as the profiler's times
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith(PROFILED):
            groups[group_of(event.key)] += event.self_cpu_time_total
    groups["outside these events (Python, NumPy, profiler)"] = max(profiled - sum(groups.values()), 0.0)
    cpu = sum(groups.values())
    lines += ["", "torch.profiler self time on the main thread by kind of operator, per step (10 steps):"]
    lines += [f"  {name:<45} {t / 10 / 1e3:6.1f} ms  {t / cpu:6.1%}" for name, t in sorted(groups.items(), key=lambda x: -x[1])]
    lines += ["", "Top operators:", prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)]
    if device.type == "cuda":  # what the GPU itself spent the steps on (torch < 2.4 names it self_cuda_time_total)
        key = "self_device_time_total" if hasattr(prof.key_averages()[0], "self_device_time_total") else "self_cuda_time_total"
        lines += ["", "Top operators by GPU time:", prof.key_averages().table(sort_by=key, row_limit=20)]
    text = "\n".join(lines)
    print(text)
    (HERE / "profiles").mkdir(exist_ok=True)
    suffix = "" if args.setting == "stripped" else f"_{args.setting}"
    shape = Path(args.data).resolve().name
    suffix += f"_{shape}" if shape in ("longtail", "onehot") else ""  # the Criteo shape keeps the plain name
    suffix += "" if device.type == "cpu" else f"_{device.type}"
    (HERE / "profiles" / f"deepfm_step_{args.precision}{suffix}.txt").write_text(text + "\n")


def overheads(data, encoder, args) -> None:
    """Median step of DeepFM without regularisers, with dropout, with batch norm and with both (the
    defaults' dropout rate), steps interleaved on the same batches; the extra time of each regulariser."""
    variants = {"neither": dict(dropout=0.0, batch_norm=False), "dropout": dict(batch_norm=False),
                "batch norm": dict(dropout=0.0), "both (defaults)": {}}
    trainers = {}
    for name, options in variants.items():
        torch.manual_seed(0)
        model_config, training = click_settings(encoder, args.precision, **options)
        model = build_model(model_config, encoder.num_features, encoder.num_fields)
        trainers[name] = (model, Trainer(model, "binary", training, progress=False))
    batches = prefetch(InMemorySource(data).batches(4096, seed=0, epoch=0), depth=0)
    times: dict[str, list[float]] = defaultdict(list)
    cpu_times: dict[str, list[float]] = defaultdict(list)
    for number in range(args.steps + 3):
        _, batch = next(batches)
        for name, (model, trainer) in trainers.items():
            began, cpu = time.perf_counter(), time.process_time()
            trainer._step(batch)  # the training step itself (the penalty of the defaults' embed_reg included)
            if number >= 3:
                times[name].append(time.perf_counter() - began)
                cpu_times[name].append(time.process_time() - cpu)
    batches.close()
    lines = [f"DeepFM steps ({args.precision}; the defaults: {describe(*click_settings(encoder, args.precision))}), "
             f"batch 4096, {args.steps} interleaved steps each, "
             f"{torch.get_num_threads()} threads, {Path(args.data).resolve().name}, load average {os.getloadavg()[0]:.1f}:"]
    for clock, samples in (("wall", times), ("CPU", cpu_times)):
        median = {name: statistics.median(t) * 1e3 for name, t in samples.items()}
        base, both = median["neither"], median["both (defaults)"]
        for name, ms in median.items():
            lines.append(f"  {name:<16} {ms:7.1f} ms/step {clock:<4}  {ms / base - 1:+6.1%} vs neither")
        lines.append(f"  dropout's share of the defaults' step ({clock}):    {(both - median['batch norm']) / both:6.1%}")
        lines.append(f"  batch norm's share of the defaults' step ({clock}): {(both - median['dropout']) / both:6.1%}")
    print("\n".join(lines))


def table_paths(data, encoder, args, embed_dim: int = 10) -> None:
    """The table's part of a step three ways on the same batches, interleaved: deepfm's (each batch's distinct rows
    gathered once, their gradient summed by the slot grouping, ``RowWiseAdam``; the batch's preparation, which the
    batch thread does in training, timed apart), ``nn.Embedding(sparse=True)`` + ``SparseAdam``, and dense
    ``nn.Embedding`` + Adam. The same start, upstream gradients and lr; deepfm's table must end as SparseAdam's."""
    from deepfm.models.layers import FeaturesEmbedding
    from deepfm.training.rowwise import RowWiseAdam

    torch.manual_seed(0)
    start = torch.randn(encoder.num_features, embed_dim) * 0.01
    ours, plain, dense = FeaturesEmbedding(encoder.num_features, embed_dim), torch.nn.Embedding.from_pretrained(
        start.clone(), freeze=False, sparse=True), torch.nn.Embedding.from_pretrained(start.clone(), freeze=False)
    ours.weight.data.copy_(start)
    paths = {
        "deepfm: distinct rows + RowWiseAdam": (lambda batch: ours.lookup(batch), RowWiseAdam([ours.weight], lr=1e-3)),
        "nn.Embedding(sparse) + SparseAdam": (lambda batch: plain(batch.ids), torch.optim.SparseAdam(plain.parameters(), lr=1e-3)),
        "nn.Embedding + Adam (dense)": (lambda batch: dense(batch.ids), torch.optim.Adam(dense.parameters(), lr=1e-3)),
    }
    chunks = InMemorySource(data).batches(4096, seed=0, epoch=0)
    times: dict[str, list[float]] = defaultdict(list)
    cpu_times: dict[str, list[float]] = defaultdict(list)
    distinct, slots = [], []
    for number in range(args.steps + 3):
        batch = next(chunks).to_batch("cpu")
        began, cpu = time.perf_counter(), time.process_time()
        batch.prepare()
        prepared = (time.perf_counter() - began, time.process_time() - cpu)
        upstream = torch.randn(*batch.ids.shape, embed_dim)
        order = list(paths)[number % len(paths):] + list(paths)[:number % len(paths)]  # each path first in turn
        for name in order:
            lookup, optimizer = paths[name]
            began, cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad()
            lookup(batch).backward(upstream)
            optimizer.step()
            if number >= 3:
                times[name].append(time.perf_counter() - began)
                cpu_times[name].append(time.process_time() - cpu)
        if number >= 3:
            times["deepfm's batch preparation (batch thread)"].append(prepared[0])
            cpu_times["deepfm's batch preparation (batch thread)"].append(prepared[1])
            distinct.append(len(torch.unique(batch.ids)))
            slots.append(batch.ids.numel())
    gap = (ours.weight - plain.weight).abs().max().item()
    lines = [f"The table's part of a step ({encoder.num_features:,} rows × {embed_dim}; batch 4096, a median "
             f"{statistics.median(distinct):,.0f} distinct ids in {statistics.median(slots):,.0f} slots), {args.steps} "
             f"interleaved steps, {torch.get_num_threads()} threads, {Path(args.data).resolve().name}, load average "
             f"{os.getloadavg()[0]:.1f}; deepfm's table against SparseAdam's after them: largest difference {gap:.1e}"]
    for clock, samples in (("wall", times), ("CPU", cpu_times)):
        for name, values in samples.items():
            lines.append(f"  {name:<42} {statistics.median(values) * 1e3:8.1f} ms {clock}")
    print("\n".join(lines))


def bare_mlp(width: int, hidden: tuple[int, ...] = (400, 400, 400)) -> torch.nn.Sequential:
    """benchmarks/tasks.py's ceiling: WIDTH→400→400→400→1 (or through ``hidden``), ReLU."""
    torch.manual_seed(0)
    layers = []
    for units in hidden:
        layers += [torch.nn.Linear(width, units), torch.nn.ReLU()]
        width = units
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))


def against_ceiling(data, encoder, args) -> None:
    """DeepFM at the defaults against the bare MLP over its input width (Adam's default update, BCE, batch
    4096, as benchmarks/tasks.py), steps interleaved in one process: run.py's × ceiling without the load's
    swings between processes (batches are made inside the timed DeepFM step: the trainer makes them ahead on
    a thread, so its step is shorter by up to their cost). Between them, DeepFM's own MLP alone (its batch
    norm, ReLU and dropout passes, the trainer's dense optimiser) on a random input that needs its gradient, as
    the embeddings do: what the step would take if the batch, the lookups, the FM term and the tables' update cost
    nothing (where the defaults run the first Linear on the batch's distinct rows, as on one-hot data, the step
    can take less)."""
    torch.manual_seed(0)
    model_config, training = click_settings(encoder, args.precision)
    model = build_model(model_config, encoder.num_features, encoder.num_fields)
    trainer = Trainer(model, "binary", training, progress=False)
    width = encoder.num_fields * model_config.embed_dim  # the MLP's input at the defaults (run.py's ceiling: fields × 10)
    ceilings = {"bare MLP (ceiling)": bare_mlp(width)}  # the issue's: WIDTH→400³→1
    if tuple(model_config.mlp) != (400, 400, 400):  # and the bare MLP of the model's own sizes (200-200 where ids recur)
        ceilings["bare MLP, its own sizes"] = bare_mlp(width, tuple(model_config.mlp))
    adams = {name: torch.optim.Adam(mlp.parameters(), lr=1e-3) for name, mlp in ceilings.items()}
    x, y = torch.randn(4096, width), (torch.rand(4096) < 0.3).float()
    own = build_model(model_config, encoder.num_features, encoder.num_fields).dnn.train()  # the trainer's settings
    own_adam = dense_optimizer(list(own.parameters()), training)  # the trainer's dense optimiser (fused Adam)
    bf16 = args.precision == "bf16"  # DeepFM hands its MLP a bf16 input then
    own_x = torch.randn(4096, width, dtype=torch.bfloat16 if bf16 else torch.float32).requires_grad_()
    batches = prefetch(InMemorySource(data).batches(4096, seed=0, epoch=0), depth=0)
    times: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for number in range(args.steps + 3):
        wall, cpu = time.perf_counter(), time.process_time()
        _, batch = next(batches)
        trainer._step(batch)
        deepfm = (time.perf_counter() - wall, time.process_time() - cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        own_adam.zero_grad(set_to_none=True)
        own_x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = own(own_x).squeeze(-1)
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y).backward()
        own_adam.step()
        alone = (time.perf_counter() - wall, time.process_time() - cpu)
        bare = {}
        for name, mlp in ceilings.items():
            wall, cpu = time.perf_counter(), time.process_time()
            adams[name].zero_grad(set_to_none=True)
            torch.nn.functional.binary_cross_entropy_with_logits(mlp(x).squeeze(-1), y).backward()
            adams[name].step()
            bare[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        if number >= 3:
            times["DeepFM defaults"].append(deepfm)
            times["its MLP alone (+ input gradient)"].append(alone)
            for name, took in bare.items():
                times[name].append(took)
    batches.close()
    median = {name: [statistics.median(p[i] for p in pairs) * 1e3 for i in (0, 1)] for name, pairs in times.items()}
    sizes = "-".join(map(str, model_config.mlp))
    print(f"{Path(args.data).resolve().name} ({describe(model_config, training)}; bare MLP {width}→400³→1"
          f"{f' and {width}→{sizes}→1' if len(ceilings) > 1 else ''}), "
          f"{args.steps} interleaved steps, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}:")
    for name, (wall, cpu) in median.items():
        print(f"  {name:<34} {wall:7.1f} ms wall ({4096 / wall * 1e3:8,.0f} samples/s)  {cpu:7.1f} ms CPU")
    (mw, mc) = median["bare MLP (ceiling)"]
    own = median.get("bare MLP, its own sizes")
    for name in ("DeepFM defaults", "its MLP alone (+ input gradient)"):
        print(f"  {name} × ceiling: {mw / median[name][0]:.2f} (wall), {mc / median[name][1]:.2f} (CPU)"
              + (f"; × the bare MLP of its own sizes: {own[0] / median[name][0]:.2f} (wall), "
                 f"{own[1] / median[name][1]:.2f} (CPU)" if own else ""))
    if args.json:
        (dw, dc), (aw, _) = median["DeepFM defaults"], median["its MLP alone (+ input gradient)"]
        print(json.dumps({"task": "step_vs_ceiling", "steps": args.steps, "precision": args.precision, "mlp_input_width": width,
                          "mlp": sizes, "deepfm_step_ms": dw, "mlp_alone_step_ms": aw, "bare_mlp_step_ms": mw,
                          "train_samples_per_s": 4096 / dw * 1e3, "step_vs_ceiling_wall": mw / dw, "step_vs_ceiling_cpu": mc / dc}
                         | ({"own_sizes_bare_mlp_step_ms": own[0], "step_vs_own_ceiling_wall": own[0] / dw,
                             "step_vs_own_ceiling_cpu": own[1] / dc} if own else {})))


def first_layer_on_and_off(data, encoder, args) -> None:
    """The trainer's step at the defaults with the MLP's first Linear on the batch's distinct rows (where
    ``first_layer.pays``) and with the dense product (``MIN_WIDTH`` out of reach)."""
    from deepfm.models import first_layer

    rule = first_layer.MIN_WIDTH
    alternating(data, encoder, args, {
        "dense first Linear": lambda: setattr(first_layer, "MIN_WIDTH", 10**9),
        "first Linear on distinct rows": lambda: setattr(first_layer, "MIN_WIDTH", rule)})


def padded_input_gradient_on_and_off(data, encoder, args) -> None:
    """The trainer's step at the defaults with the first Linear's input gradient over a width padded to
    ``padded_linear.PAD_TO`` (where the width is not a multiple of it) and with torch's own product."""
    from deepfm.models import padded_linear

    rule = padded_linear.PAD_TO
    alternating(data, encoder, args, {
        "torch's input gradient": lambda: setattr(padded_linear, "PAD_TO", 1),
        f"input gradient padded to {rule}": lambda: setattr(padded_linear, "PAD_TO", rule)})


def narrow_fields_on_and_off(data, encoder, args) -> None:
    """The trainer's step at the defaults with the first Linear's narrow-field columns on their distinct rows
    (``models.narrow_fields``) and with the dense product for every field."""
    from deepfm.models import narrow_fields

    rule = narrow_fields.MAX_ROWS_PER_WIDTH
    alternating(data, encoder, args, {
        "dense first Linear": lambda: setattr(narrow_fields, "MAX_ROWS_PER_WIDTH", 0.0),
        "narrow fields on their rows": lambda: setattr(narrow_fields, "MAX_ROWS_PER_WIDTH", rule)})


def alternating(data, encoder, args, variants: dict[str, Callable[[], None]]) -> None:
    """The trainer's step at the defaults under each of ``variants`` (a name: a function that switches the
    library to it), alternating on one model and one batch stream, so that all see the same load; batches made
    inside the timed step. The last variant is the library as it was."""
    torch.manual_seed(0)
    model_config, training = click_settings(encoder, args.precision)
    trainer = Trainer(build_model(model_config, encoder.num_features, encoder.num_fields), "binary", training,
                      progress=False)
    batches = prefetch(InMemorySource(data).batches(4096, seed=0, epoch=0), depth=0)
    times = defaultdict(list)
    try:
        for number in range(args.steps + 2):
            for name, switch in variants.items():
                switch()
                wall, cpu = time.perf_counter(), time.process_time()
                _, batch = next(batches)
                trainer._step(batch)
                if number >= 2:
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    finally:
        list(variants.values())[-1]()
        batches.close()
    print(f"{Path(args.data).resolve().name} ({describe(model_config, training)}), {args.steps} interleaved steps, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}:")
    for name, pairs in times.items():
        wall, cpu = (statistics.median(p[i] for p in pairs) * 1e3 for i in (0, 1))
        print(f"  {name:<30} {wall:7.1f} ms wall ({4096 / wall * 1e3:8,.0f} samples/s)  {cpu:7.1f} ms CPU")


def floor(width: int, steps: int) -> None:
    """The bare MLP WIDTH→400→400→400→1 with BCE at batch 4096 (benchmarks/tasks.py's ceiling), forward +
    backward + Adam, with 1 and 2 threads: the step with Adam's default (for-loop) update, its fused and
    foreach updates, and without an optimiser, interleaved; wall and CPU time, and the matmuls' share."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_flush_denormal(True)
    x, y = torch.randn(4096, width), (torch.rand(4096) < 0.3).float()

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        for p in model.parameters():
            p.grad = None
        torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y).backward()
        if optimizer is not None:
            optimizer.step()

    variants = {}
    for name, options in {"Adam (for-loop, as run.py)": {"foreach": False}, "Adam foreach": {"foreach": True},
                          "Adam fused": {"fused": True}, "no optimiser": None}.items():
        model = bare_mlp(width)
        variants[name] = (model, None if options is None else torch.optim.Adam(model.parameters(), lr=1e-3, **options))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        times: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for number in range(steps + 3):
            for name, (model, optimizer) in variants.items():
                wall, cpu = time.perf_counter(), time.process_time()
                step(model, optimizer)
                if number >= 3:
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        print(f"bare MLP {width}→400³→1, batch 4096, {threads} thread(s), {steps} interleaved steps, "
              f"load average {os.getloadavg()[0]:.1f}:")
        for name, pairs in times.items():
            wall = statistics.median(w for w, _ in pairs) * 1e3
            cpu = statistics.median(c for _, c in pairs) * 1e3
            print(f"  {name:<28} {wall:7.1f} ms wall ({4096 / wall * 1e3:9,.0f} samples/s)  {cpu:7.1f} ms CPU")
        model, optimizer = variants["Adam (for-loop, as run.py)"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step(model, optimizer)
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm"))
        print(f"  matmuls' share of the operators' self time (for-loop Adam): "
              f"{matmul / sum(e.self_cpu_time_total for e in events):.1%}")


if __name__ == "__main__":
    main()
