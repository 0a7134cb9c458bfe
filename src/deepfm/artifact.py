"""The model directory: everything needed to predict, with no pickle and no other file.

    model.safetensors   weights
    features.json       feature schema and encoders (vocabularies, statistics)
    config.json         the run configuration and the model's shape
    metrics.json        per-epoch history and the best epoch
    manifest.json       format version, package versions and a SHA-256 of every file above
    (others).json       optional: what a wrapper needs besides (``deepfm.sklearn`` writes sklearn.json),
                        checksummed in the manifest like the rest; one it does not list is not read

While training, ``checkpoint/`` (and ``checkpoint.old/``, the previous one) and
``checkpoint-features.json`` and ``checkpoint-run.json`` sit beside them (what ``--resume`` continues from);
``remove_checkpoint`` clears them once a run has finished.

Loading checks the manifest first, so a missing, altered or incompatible file is a
clear ``ModelDirError`` rather than a wrong prediction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save

from deepfm import __version__, randomness
from deepfm.config import RunConfig, saved_run
from deepfm.data.encoders import FeatureEncoder
from deepfm.errors import DeepFMError, ModelDirError, require_directory
from deepfm.models import model_for_run
from deepfm.data.identity import sha256_of

FORMAT = "deepfm-model"
FORMAT_VERSION = 1
FILES = ("model.safetensors", "features.json", "config.json", "metrics.json")
# written by training, under the model directory: the latest checkpoint, the encoders, the previous
# checkpoint and one being written (``deepfm.training.checkpoint``), what the run trains on (``deepfm.api.RUN_RECORD``)
CHECKPOINT = ("checkpoint", "checkpoint-features.json", "checkpoint.old", "checkpoint.tmp", "checkpoint-features.json.tmp",
              "checkpoint-run.json", "checkpoint-run.json.tmp", "checkpoint-refit", "checkpoint-refit.old",
              "checkpoint-refit.tmp")


@dataclass
class SavedModel:
    model: torch.nn.Module
    encoder: FeatureEncoder
    config: RunConfig
    metrics: dict[str, Any]


def save_model_dir(directory: str | Path, model: torch.nn.Module, encoder: FeatureEncoder, config: RunConfig,
                   metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write the model directory; ``extra`` maps further file names (``*.json``) to JSON content. Every file is
    written under a hidden temporary name first and renamed into place once all are written, the manifest last: a
    save that fails (a full disk) leaves the model saved there before whole, and a reader meanwhile sees the old
    files or the new (``load_model_dir`` reads again where the manifest changed under it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in (extra or {}):
        if name in FILES or name == "manifest.json" or Path(name).name != name or not name.endswith(".json"):
            raise ValueError(f"extra file {name!r}: give a new file name ending in .json")
    before = _listed_files(directory)  # a model saved here before: its files this one does not write go
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    shape = {"num_features": encoder.num_features, "num_fields": encoder.num_fields}
    contents = {  # (the weights written like the JSON files: safetensors' save_file leaves its file 0600)
        "model.safetensors": save(weights, metadata={"format": FORMAT}),
        "features.json": json.dumps(encoder.to_dict(), indent=1).encode(),
        "config.json": json.dumps({"run": config.to_json_dict(), "shape": shape}, indent=1).encode(),
        "metrics.json": json.dumps(metrics, indent=1).encode(),
        **{name: json.dumps(content, indent=1).encode() for name, content in (extra or {}).items()},
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "deepfm_version": __version__,
        "torch_version": torch.__version__,
        "files": {name: hashlib.sha256(content).hexdigest() for name, content in contents.items()},
    }
    contents["manifest.json"] = json.dumps(manifest, indent=1).encode()
    written = {name: directory / f".{name}.tmp" for name in contents}
    try:
        for name, content in contents.items():
            written[name].write_bytes(content)
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    for name, path in written.items():  # manifest.json last (dicts keep their order)
        if (directory / name).exists():  # a file it replaces keeps its mode (one opened up for a serving user)
            os.chmod(path, (directory / name).stat().st_mode & 0o7777)
        os.replace(path, directory / name)
    for name in before - set(manifest["files"]):
        if (directory / name).is_file():  # e.g. a wrapper's sklearn.json, left from the model before
            (directory / name).unlink()
    return directory


def _listed_files(directory: Path) -> set[str]:
    """The files the manifest in ``directory`` lists (plain names only; none without a readable manifest)."""
    try:
        files = json.loads((directory / "manifest.json").read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name in files if isinstance(name, str) and (name in FILES or (  # what save_model_dir writes
        Path(name).name == name and name.endswith(".json") and name != "manifest.json"))}


def read_extra(directory: str | Path, name: str) -> Any:
    """The content of extra file ``name`` (None when the model has none); call after ``load_model_dir``, which
    checked the files the manifest lists. A file of that name the manifest does not list is not the model's
    (left from another one): a ``ModelDirError``."""
    path = Path(directory) / name
    if name not in _listed_files(Path(directory)):
        if path.exists():
            raise ModelDirError(f"{path}: not listed in manifest.json, so not saved with this model (left from "
                                "another one?); save the model again, or delete the file")
        return None
    return json.loads(path.read_text())


def remove_checkpoint(directory: str | Path) -> None:
    """Delete the training checkpoint of a finished run (several times the size of the model)."""
    directory = Path(directory)
    for name in CHECKPOINT:
        path = directory / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def load_model_dir(directory: str | Path) -> SavedModel:
    """Load and verify a model directory; raises ``ModelDirError`` saying what is wrong. A directory whose model is
    replaced while it is read (its manifest changed meanwhile) is read again, up to three times."""
    directory = require_directory(directory)
    for attempt in range(3):
        manifest = _bytes_or_none(directory / "manifest.json")
        try:
            return _load_model_dir(directory)
        except ModelDirError:
            if attempt == 2 or not _changed(directory / "manifest.json", manifest):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _changed(path: Path, before: bytes | None) -> bool:
    """Whether ``path`` holds other bytes than ``before``, now or 50 ms on (a save renames its files one by one)."""
    if _bytes_or_none(path) != before:
        return True
    time.sleep(0.05)
    return _bytes_or_none(path) != before


def _bytes_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _load_model_dir(directory: Path) -> SavedModel:
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise ModelDirError(f"{directory}: not a deepfm model directory (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ModelDirError(f"{manifest_path}: unreadable manifest: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelDirError(f"{manifest_path}: not a deepfm model (format {found!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(
            f"{directory}: model format version {manifest.get('format_version')} was written by deepfm "
            f"{manifest.get('deepfm_version')}; this deepfm {__version__} reads version {FORMAT_VERSION}"
        )
    if not isinstance(manifest.get("files"), dict):
        raise ModelDirError(f"{manifest_path}: damaged manifest: no files and checksums listed")
    content: dict[str, bytes] = {}  # each file's bytes, checked and then parsed: the very bytes the manifest lists
    for name in dict.fromkeys([*FILES, *manifest["files"]]):  # the extra files a wrapper wrote too
        if Path(name).name != name:
            raise ModelDirError(f"{manifest_path}: lists {name!r}, which is not a file of this directory")
        path = directory / name
        if not path.exists():
            raise ModelDirError(f"{directory}: incomplete model directory, {name} is missing")
        content[name] = path.read_bytes() if name in FILES else b""
        digest = hashlib.sha256(content[name]).hexdigest() if name in FILES else sha256_of(path)
        if digest != manifest["files"].get(name):
            raise ModelDirError(f"{path}: checksum does not match manifest.json (the file was changed or damaged)")
    try:
        encoder = FeatureEncoder.from_dict(json.loads(content["features.json"]))
    except DeepFMError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
        raise ModelDirError(f"{directory / 'features.json'}: invalid feature schema: {error}") from None
    try:
        saved = json.loads(content["config.json"])
        config = RunConfig.model_validate(saved_run(saved["run"]))
        model = randomness.without_draws(lambda: model_for_run(config, saved["shape"]["num_features"],
                                                               saved["shape"]["num_fields"], encoder.task))
        model.load_state_dict(load_safetensors(content["model.safetensors"]))
    except DeepFMError:
        raise
    except SafetensorError as error:  # a damaged file whose checksum was written for it
        raise ModelDirError(f"{directory / 'model.safetensors'}: not a readable safetensors file: {error}") from None
    except ValidationError as error:
        unknown = [".".join(map(str, e["loc"])) for e in error.errors() if e["type"] == "extra_forbidden"]
        if unknown:  # a newer version's settings
            raise ModelDirError(f"{directory / 'config.json'}: holds settings this deepfm {__version__} does not know "
                                f"({', '.join(unknown)}); the model was written by deepfm "
                                f"{manifest.get('deepfm_version')}: load it with that version or a newer one") from None
        raise ModelDirError(f"{directory / 'config.json'}: invalid settings: {error}") from None
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ModelDirError(f"{directory}: config.json and model.safetensors do not fit together: {error}") from None
    if (encoder.num_features, encoder.num_fields) != (saved["shape"]["num_features"], saved["shape"]["num_fields"]):
        raise ModelDirError(f"{directory}: features.json describes a different table than config.json")
    model.eval()
    try:
        metrics = json.loads(content["metrics.json"])
    except json.JSONDecodeError as error:
        raise ModelDirError(f"{directory / 'metrics.json'}: unreadable: {error}") from None
    if not isinstance(metrics, dict):
        raise ModelDirError(f"{directory / 'metrics.json'}: not a JSON object of metrics")
    return SavedModel(model, encoder, config, metrics)
