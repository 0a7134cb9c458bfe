"""ONNX export: the model after encoding, for runtimes without Python or PyTorch.

The graph takes the encoded rows and returns what ``predict`` returns:

    ids     int64   (batch, F)   global ids into the fused table (offset + field-local id)
    values  float32 (batch, F)   x of each field (1 for categorical; the scaled number for numeric)
    prediction float32 (batch,)  probability (binary: sigmoid applied) or rating (regression);
                       (batch, C)  class probabilities (multiclass, ordinal)

A Bayesian FM (``--solver mcmc``) is one graph that averages its posterior samples.

F is the number of single-valued fields, in ``features.json`` order. Encoding stays outside the
graph: a service reproduces it from ``features.json`` (docs/production.md gives the rules).
Models with multi-valued fields (jagged bags) are refused: a fixed (batch, F) input cannot hold
them; serve those with ``deepfm serve``.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from deepfm.api import Estimator
from deepfm.data.batch import Batch
from deepfm.errors import ConfigError
from deepfm.tasks import as_task
from deepfm.training.trainer import to_prediction

OPSET = 17


class EncodedRowsModel(nn.Module):
    """``(ids, values) -> prediction``: a trained model behind the ONNX input signature."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:  # (B, F), (B, F) -> (B,)
        logits = self.model(Batch(ids, values, [], None))
        if as_task(self.task).name == "binary":  # 1 / (1 + e^−x): ONNX Runtime's Sigmoid gives 0 below a logit of
            return torch.reciprocal(1 + torch.exp(-logits))  # about −18 and 2× torch's value at −17; this, torch's
        return to_prediction(self.task, logits)


def _register_triu_indices(fields: int) -> None:
    """``torch.triu_indices`` (PNN's field pairs) as a constant: its sizes are the F fields, fixed by
    the model, though the tracer sees them as the (dynamic) shape of a tensor."""
    from torch.onnx import symbolic_helper

    def triu_indices(g, row, col, offset, *rest):
        return g.op("Constant", value_t=torch.triu_indices(fields, fields, int(symbolic_helper._maybe_get_const(offset, "i"))))

    torch.onnx.register_custom_op_symbolic("aten::triu_indices", triu_indices, OPSET)


def export_onnx(model_dir: str | Path, path: str | Path) -> Path:
    """Write the model of ``model_dir`` as ONNX to ``path`` (a former .onnx file there is replaced; any other file is
    refused: a model directory's weights, say)."""
    target = Path(path).resolve()  # (a link named .onnx to the weights is the weights)
    if target.is_file() and target.suffix.lower() != ".onnx":
        own = target.parent == Path(model_dir).resolve()
        raise ConfigError(f"{path}: {'a file of the model directory' if own else 'an existing file, not an .onnx graph'}; "
                          f"write the ONNX graph to an .onnx file (e.g. {Path(model_dir) / 'model.onnx'})")
    estimator = Estimator.load(model_dir)
    encoder = estimator.encoder
    if encoder.multi_fields:
        names = ", ".join(f.name for f in encoder.multi_fields)
        raise ConfigError(f"{model_dir}: ONNX export takes single-valued fields only, and this model has "
                          f"multi-valued fields ({names}); serve it with 'deepfm serve' instead")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_onnx(estimator.model.to("cpu").eval(), encoder.task, len(encoder.single_fields), str(path))
    return path


def write_onnx(model: nn.Module, task: str, fields: int, target: str | io.BytesIO) -> None:
    """Write ``model`` (of ``fields`` single-valued fields, no bags) as ONNX to ``target``, a path or a buffer."""
    wrapped = EncodedRowsModel(model, task).eval()
    example = (torch.zeros(2, fields, dtype=torch.int64), torch.ones(2, fields, dtype=torch.float32))
    batch_axis = {0: "batch"}
    _register_triu_indices(fields)
    with torch.no_grad():  # the plain embedding lookup, not the training one
        torch.onnx.export(wrapped, example, target, input_names=["ids", "values"], output_names=["prediction"],
                          dynamic_axes={"ids": batch_axis, "values": batch_axis, "prediction": batch_axis},
                          opset_version=OPSET, dynamo=False)
