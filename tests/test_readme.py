"""The README's Python snippets run as written (on small generated data in their file names)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from deepfm import Estimator
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block_containing(text: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    [block] = [b for b in blocks if text in b]
    return block


def test_the_onnx_snippet_runs_on_rows_without_and_with_the_label(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from deepfm.export import export_onnx

    monkeypatch.chdir(tmp_path)
    spec = SyntheticSpec(rows=300, categorical=4, numeric=2, vocabulary=30, seed=4)
    (tmp_path / "frappe").mkdir()
    train, _ = make_ctr_table(spec)
    Estimator(model={"mlp": (8,)}, training={"epochs": 1, "batch_size": 64}).fit(train, out="runs/frappe", progress=False)
    export_onnx("runs/frappe", "frappe.onnx")
    test, _ = make_ctr_table(spec, part=1)
    snippet = python_block_containing("onnxruntime")
    for rows in (test.drop(["label"]), test):
        pacsv.write_csv(rows, tmp_path / "frappe" / "test.csv")
        exec(compile(snippet, "README.md", "exec"), {})
