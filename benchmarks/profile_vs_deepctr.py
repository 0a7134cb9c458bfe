"""deepfm's DeepFM step at its defaults against DeepCTR-Torch's at its defaults, same rows, steps interleaved.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/profile_vs_deepctr.py benchmarks/.data/onehot [--steps 12]

One process, so a busy machine slows every variant alike (run.py's rows run minutes apart, in separate
processes). deepfm: its defaults for this data (``profile_step.click_settings``: k 64 where ids recur), the
same at k 10, and k 10 without dropout and batch norm; DeepCTR-Torch (imported from benchmarks/.peers-venv,
same torch; ``PEERS_PYTHON`` names another venv's interpreter, as for run.py): ``DeepFM`` with embeddings of 10 and its defaults, one table per field, and ``BaseModel.fit``'s
step: the DataLoader's next batch (per-row fetch + collate), forward, loss + its L2 over the tables,
backward, Adam. Categorical columns only (the one-hot and long-tail shapes). Median wall and CPU time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from profile_step import click_settings, describe  # noqa: E402

from deepfm.config import DataConfig  # noqa: E402
from deepfm.data.batch import InMemorySource, prefetch  # noqa: E402
from deepfm.data.stream import ChunkedFile, chunk_bytes_for, encode_file, fit_streaming  # noqa: E402
from deepfm.models import build_model  # noqa: E402
from deepfm.runtime import configure as configure_runtime  # noqa: E402
from deepfm.training.trainer import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent


def deepctr_step(ids: torch.Tensor, labels: torch.Tensor):
    """DeepCTR-Torch's DeepFM at its defaults over ``ids`` (rows × fields, global ids) and one step of its fit loop."""
    venv = Path(os.environ["PEERS_PYTHON"]).parent.parent if "PEERS_PYTHON" in os.environ else HERE / ".peers-venv"  # as run.py
    sys.path += [str(p) for p in sorted((venv / "lib").glob("python*/site-packages"))]
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM
    from torch.utils.data import DataLoader, TensorDataset

    local = ids - ids.min(0).values  # each field's own table, as LabelEncoder numbers them
    columns = [SparseFeat(f"f{i}", int(local[:, i].max()) + 1, embedding_dim=10) for i in range(ids.shape[1])]
    torch.manual_seed(0)
    model = DeepFM(columns, columns, dnn_hidden_units=(400, 400, 400), task="binary", device="cpu")
    model.compile("adam", "binary_crossentropy")
    model.train()
    loader = iter(DataLoader(TensorDataset(local, labels), shuffle=True, batch_size=4096))

    def step() -> None:
        x, y = next(loader)
        y_pred = model(x.float()).squeeze(-1)
        model.optim.zero_grad()
        loss = F.binary_cross_entropy(y_pred, y.float(), reduction="sum") + model.get_regularization_loss() + model.aux_loss
        loss.item()
        loss.backward()
        model.optim.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    configure_runtime(0)
    torch.set_flush_denormal(True)
    path = Path(args.data) / "train.csv"
    file = ChunkedFile(path, chunk_bytes=chunk_bytes_for(path, 65_536))
    encoder, rows = fit_streaming(file, DataConfig(numeric=()))
    data = encode_file(file, encoder, rows)

    def deepfm(**options) -> Trainer:
        model_config, training = click_settings(encoder, "fp32", **options)
        torch.manual_seed(0)
        return Trainer(build_model(model_config, encoder.num_features, encoder.num_fields), "binary", training, progress=False)

    trainers = {f"deepfm defaults ({describe(*click_settings(encoder, 'fp32'))})": deepfm(),
                "deepfm defaults at k 10": deepfm(embed_dim=10),
                "deepfm at k 10 without dropout and batch norm": deepfm(embed_dim=10, dropout=0.0, batch_norm=False)}
    peer = deepctr_step(torch.as_tensor(data.ids), torch.as_tensor(data.labels))
    batches = prefetch(InMemorySource(data).batches(4096, seed=0, epoch=0), depth=0)
    times: dict[str, list[tuple[float, float]]] = {}
    for number in range(args.steps + 3):
        _, batch = next(batches)
        steps = {name: (lambda trainer=trainer: trainer._step(batch)) for name, trainer in trainers.items()}
        for name, step in (steps | {"DeepCTR-Torch defaults (k 10), its DataLoader included": peer}).items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            if number >= 3:
                times.setdefault(name, []).append((time.perf_counter() - wall, time.process_time() - cpu))
    batches.close()
    print(f"{Path(args.data).resolve().name}, {args.steps} interleaved steps, batch 4096, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}:")
    peer_cpu = statistics.median(c for _, c in times["DeepCTR-Torch defaults (k 10), its DataLoader included"])
    for name, pairs in times.items():
        wall, cpu = (statistics.median(p[i] for p in pairs) for i in (0, 1))
        print(f"  {name}\n      {wall * 1e3:7.1f} ms wall {cpu * 1e3:7.1f} ms CPU   DeepCTR-Torch's CPU time / this: {peer_cpu / cpu:.2f}")


if __name__ == "__main__":
    main()
