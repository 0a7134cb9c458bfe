"""Where a command writes a file, checked before any work (a wrong path would otherwise fail at the end)."""

from __future__ import annotations

import os
from pathlib import Path

from deepfm.errors import ConfigError


def check_writable_file(path: str | Path, flag: str) -> None:
    """A ``ConfigError`` naming ``flag`` where ``path`` could not be written as a file: it is a folder, a folder on
    its way is a file, or the nearest folder that exists is not writable. Folders it names that do not exist yet
    are the writer's to create."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: that is a folder; name a file in it")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")
