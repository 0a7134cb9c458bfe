"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import sys
import sysconfig
import warnings
from pathlib import Path


class DeepFMError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(DeepFMError, ValueError):
    """A configuration value is invalid; the message names the key and what is allowed. A ``ValueError``, as
    Python's and scikit-learn's own checks raise for an invalid parameter."""


class DataTypeError(ConfigError, TypeError):
    """Data of a type the API does not read (a list, a NumPy array): a ``TypeError`` as Python's own, and a
    ``ConfigError`` for the CLI."""


class DataWarning(UserWarning):
    """Data that reads but looks unlike what the model was trained on (``warn_data``; the CLI prints
    ``note: ...``)."""


class SettingWarning(UserWarning):
    """A setting given that the chosen model or solver does not read, so it is not applied (``warn_setting``; the CLI
    prints ``note: ...``, even under ``--quiet``)."""


def warn_data(message: str) -> None:
    """A ``DataWarning`` located at the first caller outside this package and Python's own modules (the user's line
    that read the data, not the library's line that noticed it, nor contextlib's between them)."""
    _warn_from_callers_line(message, DataWarning)


def warn_setting(message: str) -> None:
    """A ``SettingWarning``, located as ``warn_data`` locates its warning."""
    _warn_from_callers_line(message, SettingWarning)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """A warning of ``category``, located as ``warn_data`` locates its warning."""
    _warn_from_callers_line(message, category)


def _warn_from_callers_line(message: str, category: type[Warning]) -> None:
    package = Path(__file__).parent
    inside = (str(package) + "/", str(package.resolve()) + "/", sysconfig.get_paths()["stdlib"] + "/")
    frame, level = sys._getframe(2), 3  # stacklevel 3: the caller of warn_data, warn_setting or warn_user
    while frame.f_back is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


class DataError(DeepFMError, ValueError):
    """Bad input data, located as ``path:line:column: what is wrong`` (a ``ValueError``, as scikit-learn's checks
    expect of bad ``X``).

    ``line`` and ``column`` are 1-based; ``column`` is the field number for delimited
    text (CSV/TSV/Criteo) and the character position for libFM/libFFM lines.
    Either may be ``None`` when the problem is not tied to one place (an empty file).
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None, column: int | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class NotPositionalError(DataError):
    """A libFM file that its first chunk laid out as positional fields f1..fn, whose later rows are not so: read in one
    piece, its rows make one multi-valued field (``Estimator.fit`` reads it again so where it holds the rows in memory)."""

    @classmethod
    def of(cls, error: DataError) -> "NotPositionalError":
        return cls(error.path, error.message, line=error.line, column=error.column)


class ModelDirError(DeepFMError):
    """A model directory is missing files, was altered, or comes from an incompatible version."""


def require_directory(directory: str | Path) -> Path:
    """``directory``, which must be a directory: a file or nothing there is a ``ModelDirError`` (checked before
    anything heavy loads)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: not a model directory ({'a file' if directory.exists() else 'it does not exist'})")
    return directory


class TrainingDiverged(DeepFMError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class CheckpointError(DeepFMError):
    """No training checkpoint to resume from is intact; the message names the damaged files."""


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a job scheduler, ``docker stop``, ``kill``, a closed terminal) ending ``deepfm train`` as
    Ctrl-C does: the same cleanup and resume hint, and the exit status 128 + ``signal_number``."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number
