"""`deepfm demo` runs the whole path on built-in data: files in, model directory out, reloaded predictions."""

import json

from deepfm.data.synthetic import SyntheticSpec
from deepfm.demo import run_demo


def test_demo_trains_saves_reloads_and_reports_auc_against_the_best_achievable(tmp_path):
    lines = []
    summary = run_demo(tmp_path / "model", log=lines.append, progress=False,
                       spec=SyntheticSpec(rows=3000, categorical=4, numeric=2, vocabulary=60, seed=1),
                       model={"mlp": (16,)}, training={"epochs": 3})
    assert (tmp_path / "model" / "manifest.json").is_file()
    assert 0.6 < summary["test_auc"] <= summary["oracle_auc"] + 0.02
    assert any("best achievable" in line for line in lines)
    assert any(line.startswith(f"predicted {summary['test_rows']:,} test rows with the reloaded model") for line in lines)
    saved = json.loads((tmp_path / "model" / "features.json").read_text())
    kinds = {field["name"]: field["kind"] for field in saved["fields"]}
    assert kinds == {"I1": "numeric", "I2": "numeric", **{f"C{f}": "categorical" for f in range(1, 5)}}, "as its log says"
    assert not any("integer columns read as categorical" in line for line in lines), "the demo names its columns' kinds"

