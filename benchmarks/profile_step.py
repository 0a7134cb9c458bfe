"""Where a DeepFM training step spends its time (1M-row Criteo-shaped data, batch 4096).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/profile_step.py [DATA_DIR] [--steps 30]

Two views: wall time per phase of the step (making the batch, forward,
backward, sparse and dense optimiser), and torch.profiler self-CPU time grouped by what
the operators do. Writes the summary to benchmarks/profiles/deepfm_step.txt.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from deepfm.config import DataConfig, ModelConfig, TrainingConfig  # noqa: E402
from deepfm.data.batch import InMemorySource, prefetch  # noqa: E402
from deepfm.data.stream import ChunkedFile, chunk_bytes_for, encode_file, fit_streaming  # noqa: E402
from deepfm.models import build_model  # noqa: E402
from deepfm.runtime import configure as configure_runtime  # noqa: E402
from deepfm.training.trainer import Trainer, loss_fn  # noqa: E402

HERE = Path(__file__).resolve().parent
GROUPS = (  # first match wins
    ("MLP matmuls (forward + backward)", ("aten::mm", "aten::addmm")),
    ("MLP activations", ("aten::threshold_backward", "aten::clamp_min", "aten::relu")),
    ("embedding gather / scatter", ("aten::index_select", "aten::index_copy_", "aten::scatter_add_", "aten::index_add_",
                                    "aten::embedding", "aten::index", "aten::unique", "aten::sort", "aten::_unique2")),
    ("optimiser element-wise", ("aten::lerp_", "aten::addcdiv_", "aten::addcmul_", "aten::sqrt", "aten::sqrt_",
                                "aten::_foreach", "aten::div", "aten::mul_", "aten::add_", "aten::gt", "aten::all")),
    ("zeroing / copies", ("aten::fill_", "aten::zero_", "aten::copy_", "aten::zeros", "aten::empty")),
)


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
    args = parser.parse_args()
    configure_runtime(0)
    path = Path(args.data) / "train.csv"
    file = ChunkedFile(path, chunk_bytes=chunk_bytes_for(path, 65_536))
    encoder, rows = fit_streaming(file, DataConfig(numeric=tuple(f"I{i}" for i in range(1, 14))))
    data = encode_file(file, encoder, rows)
    model = build_model(ModelConfig(dropout=0.0, batch_norm=False), encoder.num_features, encoder.num_fields)
    trainer = Trainer(model, "binary", TrainingConfig(batch_size=4096, epochs=1, embed_l2=1e-6,
                                                          precision=args.precision), progress=False)
    optimizers = trainer.optimizer.optimizers
    batches = prefetch(InMemorySource(data).batches(4096, seed=0, epoch=0), depth=0)  # as Trainer does in memory
    phases: dict[str, float] = defaultdict(float)

    def step(timed: bool) -> None:
        clock = time.perf_counter()
        marks = []
        _, batch = next(batches)
        marks.append(("make the batch (gather, tensors, distinct ids)", time.perf_counter()))
        trainer.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=trainer.bf16):
            logits = model(batch)
        loss = loss_fn("binary", logits.float(), batch.labels)
        marks.append(("forward (embedding, FM, MLP, loss)", time.perf_counter()))
        loss.backward()
        marks.append(("backward", time.perf_counter()))
        optimizers["sparse"].step()
        marks.append(("row-wise Adam on the touched embedding rows", time.perf_counter()))
        optimizers["dense"].step()
        marks.append(("Adam on the MLP", time.perf_counter()))
        float(loss)
        if timed:
            for name, at in marks:
                phases[name] += at - clock
                clock = at

    for _ in range(5):
        step(False)
    began = time.perf_counter()
    for _ in range(args.steps):
        step(True)
    total = time.perf_counter() - began
    lines = [f"DeepFM step ({args.precision}), batch 4096, {args.steps} steps, {torch.get_num_threads()} threads: "
             f"{total / args.steps * 1e3:.1f} ms/step = {args.steps * 4096 / total:,.0f} samples/s", "",
             "Wall time per phase:"]
    lines += [f"  {name:<45} {t / args.steps * 1e3:6.1f} ms  {t / total:6.1%}" for name, t in phases.items()]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step(False)
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::") or event.key.startswith("Optimizer"):
            groups[group_of(event.key)] += event.self_cpu_time_total
    cpu = sum(groups.values())
    lines += ["", "torch.profiler self-CPU time by kind of operator (10 steps):"]
    lines += [f"  {name:<45} {t / 10 / 1e3:6.1f} ms  {t / cpu:6.1%}" for name, t in sorted(groups.items(), key=lambda x: -x[1])]
    lines += ["", "Top operators:", prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)]
    text = "\n".join(lines)
    print(text)
    (HERE / "profiles").mkdir(exist_ok=True)
    (HERE / "profiles" / f"deepfm_step_{args.precision}.txt").write_text(text + "\n")
    batches.close()


if __name__ == "__main__":
    main()
