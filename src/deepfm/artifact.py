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

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save

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
    """Write the model directory; ``extra`` maps further file names (``*.json``) to JSON content."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    before = _listed_files(directory)  # a model saved here before: its files this one does not write go
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # written like the JSON files (safetensors' save_file leaves its file 0600, whatever the umask)
    (directory / "model.safetensors").write_bytes(save(weights, metadata={"format": FORMAT}))
    (directory / "features.json").write_text(json.dumps(encoder.to_dict(), indent=1))
    shape = {"num_features": encoder.num_features, "num_fields": encoder.num_fields}
    (directory / "config.json").write_text(json.dumps({"run": config.to_json_dict(), "shape": shape}, indent=1))
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=1))
    for name, content in (extra or {}).items():
        if name in FILES or name == "manifest.json" or Path(name).name != name or not name.endswith(".json"):
            raise ValueError(f"extra file {name!r}: give a new file name ending in .json")
        (directory / name).write_text(json.dumps(content, indent=1))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "deepfm_version": __version__,
        "torch_version": torch.__version__,
        "files": {name: sha256_of(directory / name) for name in (*FILES, *(extra or {}))},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
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
    """Load and verify a model directory; raises ``ModelDirError`` saying what is wrong."""
    directory = require_directory(directory)
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
    for name in dict.fromkeys([*FILES, *manifest["files"]]):  # the extra files a wrapper wrote too
        if Path(name).name != name:
            raise ModelDirError(f"{manifest_path}: lists {name!r}, which is not a file of this directory")
        path = directory / name
        if not path.exists():
            raise ModelDirError(f"{directory}: incomplete model directory, {name} is missing")
        if sha256_of(path) != manifest["files"].get(name):
            raise ModelDirError(f"{path}: checksum does not match manifest.json (the file was changed or damaged)")
    try:
        encoder = FeatureEncoder.from_dict(json.loads((directory / "features.json").read_text()))
    except DeepFMError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
        raise ModelDirError(f"{directory / 'features.json'}: invalid feature schema: {error}") from None
    try:
        saved = json.loads((directory / "config.json").read_text())
        config = RunConfig.model_validate(saved_run(saved["run"]))
        model = randomness.without_draws(lambda: model_for_run(config, saved["shape"]["num_features"],
                                                               saved["shape"]["num_fields"], encoder.task))
        model.load_state_dict(load_file(directory / "model.safetensors"))
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
        metrics = json.loads((directory / "metrics.json").read_text())
    except json.JSONDecodeError as error:
        raise ModelDirError(f"{directory / 'metrics.json'}: unreadable: {error}") from None
    if not isinstance(metrics, dict):
        raise ModelDirError(f"{directory / 'metrics.json'}: not a JSON object of metrics")
    return SavedModel(model, encoder, config, metrics)
