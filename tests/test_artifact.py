"""The model directory loads with no pickle and no other file, and refuses damaged input."""

import json

import numpy as np
import pytest

from deepfm import Estimator
from deepfm.artifact import load_model_dir
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.errors import ModelDirError

SPEC = SyntheticSpec(rows=2000, categorical=4, numeric=2, vocabulary=100, seed=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    table, _ = make_ctr_table(SPEC)
    est = Estimator(model={"mlp": (16,)}, training={"epochs": 1, "batch_size": 256}).fit(table, out=out, progress=False)
    return out, est, make_ctr_table(SPEC, rows=500, part=1)[0]


def test_loaded_model_predicts_exactly_what_the_trained_model_predicted(saved):
    out, est, test = saved
    np.testing.assert_array_equal(Estimator.load(out).predict(test), est.predict(test))


def test_a_pandas_dataframe_predicts_like_the_arrow_table_and_other_objects_are_refused(saved):
    from deepfm.errors import ConfigError

    out, _, test = saved
    loaded = Estimator.load(out)
    np.testing.assert_array_equal(loaded.predict(test.to_pandas()), loaded.predict(test))
    with pytest.raises(ConfigError, match="expected a file path, a pyarrow.Table or a pandas DataFrame, got list; "
                                          r"pandas.DataFrame\(data\) makes one of a list of records"):
        loaded.predict([{"user": "1"}, {"user": "2"}])
    with pytest.raises(TypeError, match="got ndarray"):  # Python's own kind of error for a wrong type, too
        loaded.predict(np.zeros((2, 3)))


def test_model_directory_holds_weights_schema_config_metrics_and_manifest(saved):
    out, _, _ = saved
    for name in ("model.safetensors", "features.json", "config.json", "metrics.json", "manifest.json"):
        assert (out / name).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "deepfm-model" and manifest["deepfm_version"]


def copy_dir(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_changed_file_is_refused(saved, tmp_path):
    out = copy_dir(saved[0], tmp_path / "m")
    features = json.loads((out / "features.json").read_text())
    features["fields"][0]["vocabulary"] = list(reversed(features["fields"][0]["vocabulary"] or []))
    (out / "features.json").write_text(json.dumps(features))
    with pytest.raises(ModelDirError, match="features.json: checksum does not match"):
        load_model_dir(out)


def test_a_missing_file_is_refused(saved, tmp_path):
    out = copy_dir(saved[0], tmp_path / "m")
    (out / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match="model.safetensors is missing"):
        load_model_dir(out)


def test_an_incompatible_format_version_is_refused(saved, tmp_path):
    out = copy_dir(saved[0], tmp_path / "m")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="format version 99"):
        load_model_dir(out)


def test_a_directory_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(ModelDirError, match="no manifest.json"):
        load_model_dir(tmp_path)


def rewrite_features(out, change):
    """Edit features.json and update its checksum, as a hand-made schema would arrive."""
    rewrite_json(out, "features.json", change)


def rewrite_json(out, name, change):
    """Edit the JSON file ``name`` of a model directory and update its checksum in the manifest."""
    import hashlib

    content = json.loads((out / name).read_text())
    change(content)
    (out / name).write_text(json.dumps(content))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, message", [
    (lambda f: f["fields"][0].update(kind="bogus"), "kind must be"),
    (lambda f: f["fields"][-1].update(vocabulary=None), "needs a vocabulary"),
    (lambda f: f["fields"][0].update(size=f["fields"][0]["size"] + 1), "size"),
    (lambda f: f.update(task="ranking"), "task must be"),
])
def test_a_schema_that_is_consistent_with_the_manifest_but_invalid_is_refused(saved, tmp_path, change, message):
    out = copy_dir(saved[0], tmp_path / "m")
    rewrite_features(out, change)
    with pytest.raises(ModelDirError, match=message):
        load_model_dir(out)


def test_encode_uses_the_label_when_the_rows_have_it_and_needs_it_only_when_asked(saved):
    from deepfm.errors import DataError

    out, _, test = saved
    loaded = Estimator.load(out)
    assert loaded.encode(test.drop(["label"])).labels is None
    np.testing.assert_array_equal(loaded.encode(test).labels, np.asarray(test.column("label"), dtype=np.float32))
    assert loaded.encode(test, with_labels=False).labels is None
    with pytest.raises(DataError, match="no label column 'label'"):
        loaded.encode(test.drop(["label"]), with_labels=True)
    np.testing.assert_array_equal(loaded.encode(test.drop(["label"])).ids, loaded.encode(test).ids)


def test_extra_files_are_checksummed_in_the_manifest_and_must_be_plain_json_names(saved, tmp_path):
    from deepfm.artifact import read_extra

    out, est, _ = saved
    est.save(tmp_path / "m", extra={"wrapper.json": {"kind": "test"}})
    load_model_dir(tmp_path / "m")
    assert read_extra(tmp_path / "m", "wrapper.json") == {"kind": "test"}
    assert read_extra(out, "wrapper.json") is None
    (tmp_path / "m" / "wrapper.json").unlink()
    with pytest.raises(ModelDirError, match="wrapper.json is missing"):
        load_model_dir(tmp_path / "m")
    for name in ("config.json", "../x.json", "notes.txt"):
        with pytest.raises(ValueError, match="give a new file name ending in .json"):
            est.save(tmp_path / "n", extra={name: {}})


def test_a_model_saved_over_another_takes_the_others_extra_files_with_it_and_an_unlisted_one_is_not_read(saved, tmp_path):
    from deepfm.artifact import read_extra

    _, est, _ = saved
    est.save(tmp_path / "m", extra={"wrapper.json": {"kind": "test"}})
    (tmp_path / "m" / "notes.txt").write_text("the user's own")
    est.save(tmp_path / "m")  # another model saved into the same folder, without that file
    assert not (tmp_path / "m" / "wrapper.json").exists() and (tmp_path / "m" / "notes.txt").exists()
    assert read_extra(tmp_path / "m", "wrapper.json") is None
    (tmp_path / "m" / "wrapper.json").write_text('{"kind": "stale"}')  # copied in by hand: not the model's
    load_model_dir(tmp_path / "m")
    with pytest.raises(ModelDirError, match="wrapper.json: not listed in manifest.json"):
        read_extra(tmp_path / "m", "wrapper.json")


def test_a_model_trained_on_a_gpu_loads_and_predicts_on_a_machine_without_one(saved, tmp_path, monkeypatch):
    import torch

    out, est, test = saved
    gpu = copy_dir(out, tmp_path / "gpu")  # what a GPU run writes: CPU weights, its device in config.json
    rewrite_json(gpu, "config.json", lambda config: config["run"]["training"].update(device="cuda:0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = Estimator.load(gpu)
    assert loaded.config.training.device == "cpu"
    np.testing.assert_array_equal(loaded.predict(test), est.predict(test))


def test_a_model_saved_with_a_setting_earlier_versions_ignored_still_loads(saved, tmp_path):
    """--positive with --task multiclass was dropped without a word before it was refused: such models still load."""
    out, est, test = saved
    older = copy_dir(out, tmp_path / "older")
    rewrite_json(older, "config.json", lambda config: config["run"]["data"].update(positive="5", task="multiclass"))
    loaded = Estimator.load(older)
    assert loaded.config.data.positive is None
    np.testing.assert_array_equal(loaded.predict(test), est.predict(test))


def edit_manifest(out, change):
    manifest = json.loads((out / "manifest.json").read_text())
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))


def rewrite_text(out, name, text):
    """Replace file ``name`` of a model directory by ``text`` and update its checksum in the manifest."""
    import hashlib

    (out / name).write_text(text)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256(text.encode()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "manifest.json").write_text("[1, 2]"), r"manifest.json: not a deepfm model \(format 'list'\)"),
    (lambda out: edit_manifest(out, lambda m: m.pop("files")), "damaged manifest: no files"),
    (lambda out: edit_manifest(out, lambda m: m.update(files=None)), "damaged manifest: no files"),
    (lambda out: rewrite_text(out, "features.json", "[1, 2]"), "features.json: invalid feature schema"),
    (lambda out: rewrite_text(out, "metrics.json", "{not json"), "metrics.json: unreadable"),
    (lambda out: rewrite_text(out, "metrics.json", "[]"), "metrics.json: not a JSON object of metrics"),
    (lambda out: rewrite_json(out, "config.json", lambda c: c["run"]["model"].update(new_option=1)),
     r"config.json: holds settings this deepfm .* does not know \(model.new_option\); the model was written by deepfm"),
])
def test_a_damaged_or_newer_model_directory_is_a_model_dir_error_not_a_traceback(saved, tmp_path, damage, message):
    """A reviewer's finds: each was a KeyError, AttributeError, TypeError or JSONDecodeError (exit 1), and a newer
    version's setting read as "config.json and model.safetensors do not fit together"."""
    out = copy_dir(saved[0], tmp_path / "m")
    damage(out)
    with pytest.raises(ModelDirError, match=message):
        load_model_dir(out)


@pytest.mark.parametrize("device", ["mps", "cuda:7"])
def test_a_model_trained_on_a_device_this_machine_lacks_loads_on_the_cpu(saved, tmp_path, device, monkeypatch):
    """A Mac's --device mps model failed with "PyTorch is not linked with support for mps devices"."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out, est, test = saved
    out = copy_dir(out, tmp_path / "m")
    rewrite_json(out, "config.json", lambda c: c["run"]["training"].update(device=device))
    loaded = Estimator.load(out)
    assert loaded.config.training.device == "cpu"
    np.testing.assert_array_equal(loaded.predict(test), est.predict(test))


def test_metrics_json_records_what_the_model_trained_on(tmp_path):
    """A model directory named its training files as typed, with no size or time to tell a later file of that name
    apart (a tester's note)."""
    table, _ = make_ctr_table(SPEC)
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, tmp_path / "train.csv")
    est = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(
        str(tmp_path / "train.csv"), out=tmp_path / "m", progress=False)
    data = json.loads((tmp_path / "m" / "metrics.json").read_text())["data"]
    stat = (tmp_path / "train.csv").stat()
    assert data["train"] == [{"path": str((tmp_path / "train.csv").resolve()), "bytes": stat.st_size,
                              "modified_ns": stat.st_mtime_ns}] and data["valid"] is None
    in_memory = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(table, progress=False)
    assert in_memory.metrics["data"]["train"]["rows"] == table.num_rows and est.metrics["data"] == data
    assert est.metrics["threads"] >= 1  # the count it trained with (config.json's 0 means one per core)


def test_a_loaded_models_settings_refit_without_warnings_of_settings_not_applied(tmp_path):
    """A loaded config sets every key, so refitting it warned that an FM does not use model.mlp, model.dropout, ...
    and that the gradient solver does not use sweeps, samples, ... (none of them set by anyone)."""
    import warnings

    from deepfm.errors import SettingWarning

    table, _ = make_ctr_table(SPEC)
    Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(table, out=tmp_path / "m", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        Estimator(Estimator.load(tmp_path / "m").config).fit(table, progress=False)
    with pytest.warns(SettingWarning, match="model fm does not use model.dropout"):  # a value of the user's still is
        Estimator(model={"name": "fm", "embed_dim": 4, "dropout": 0.5}, training={"epochs": 1}).fit(table, progress=False)


def test_a_save_that_fails_leaves_the_model_saved_before_whole_and_no_temporary_file(saved, tmp_path, monkeypatch):
    """A full disk during --overwrite's save left the old model's directory with new weights and the old manifest:
    unloadable, "checksum does not match" (a pipeline tester's find)."""
    from pathlib import Path

    from deepfm.artifact import save_model_dir

    out, est, test = saved
    out = copy_dir(out, tmp_path / "m")
    real = Path.write_bytes

    def full_disk(path, data):
        if path.name == ".metrics.json.tmp":  # the weights written, then the disk fills
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_model_dir(out, est.model, est.encoder, est.config.model_copy(update={"out": None}), {"rows": 1})
    monkeypatch.undo()
    np.testing.assert_array_equal(Estimator.load(out).predict(test), est.predict(test))
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_model_replaced_while_it_is_read_is_read_again(saved, tmp_path, monkeypatch):
    """A reader looping over load_model_dir while train --overwrite replaced the model failed 166 times in 3,007
    ("checksum does not match", "unreadable manifest")."""
    import deepfm.artifact as artifact

    out, est, test = saved
    out = copy_dir(out, tmp_path / "m")
    real, calls = artifact._load_model_dir, []

    def replaced_mid_read(directory):
        calls.append(1)
        if len(calls) == 1:  # a new model lands while the first read is under way
            artifact.save_model_dir(directory, est.model, est.encoder, est.config, {"rows": 2})
            raise ModelDirError(f"{directory}/model.safetensors: checksum does not match manifest.json")
        return real(directory)

    monkeypatch.setattr(artifact, "_load_model_dir", replaced_mid_read)
    assert load_model_dir(out).metrics == {"rows": 2} and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(artifact, "_load_model_dir", lambda directory: calls.append(1) or (_ for _ in ()).throw(
        ModelDirError("damaged")))
    with pytest.raises(ModelDirError, match="damaged"):  # nothing changed: a damaged directory is said at once
        load_model_dir(out)
    assert len(calls) == 1


def test_a_model_is_parsed_from_the_bytes_its_manifest_checked_and_a_resave_keeps_the_files_modes(saved, tmp_path,
                                                                                                  monkeypatch):
    """A save that renamed its files in between the check and the parse gave the old encoder with the new weights,
    silently (a reviewer's race); and a re-save reset files opened up for a serving user to the umask's mode."""
    import deepfm.artifact as artifact
    from deepfm.data.encoders import FeatureEncoder

    out, est, test = saved
    out = copy_dir(out, tmp_path / "m")
    real, calls = FeatureEncoder.from_dict, []

    def replaced_while_parsed(item):
        calls.append(1)
        if len(calls) == 1:  # the files are read: a new save lands before they are parsed
            (out / "features.json").write_text("{}")
        return real(item)

    monkeypatch.setattr(FeatureEncoder, "from_dict", staticmethod(replaced_while_parsed))
    np.testing.assert_array_equal(Estimator.load(out).predict(test), est.predict(test))  # the bytes checked
    monkeypatch.undo()
    (out / "features.json").chmod(0o640)
    artifact.save_model_dir(out, est.model, est.encoder, est.config, {"rows": 1})
    assert (out / "features.json").stat().st_mode & 0o777 == 0o640
