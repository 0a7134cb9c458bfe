"""The library's messages in the words of ``deepfm.sklearn``: its checks and notes name the command's flags and the
config keys (``--batch-size 2 or more``, ``--categorical (data.categorical)``), which a scikit-learn user, who set
``batch_size=`` or ``categorical=``, never typed. ``in_estimator_words`` rewrites each flag as the estimator's
parameter (``batch_size=2``), or, for a setting it has none for, as its ``config=`` entry, and each config key that is
a parameter as the parameter (``training.seed`` as ``random_state``); other text is left alone.

    in_estimator_words("use --solver gradient")                    # "use solver='gradient'"
    in_estimator_words("--portfolio off (training.portfolio)")     # "config={'training': {'portfolio': 'off'}}"
"""

from __future__ import annotations

import json
import re
import shlex
from contextlib import contextmanager
from typing import Iterator

from deepfm.errors import DataError, DeepFMError

PARAMETER_OF_FLAG = {  # the estimators' parameter for each flag that has one
    "batch-size": "batch_size", "lr": "lr", "epochs": "epochs", "embed-dim": "embed_dim", "mlp": "mlp",
    "dropout": "dropout", "embed-l2": "embed_l2", "optimizer": "optimizer", "solver": "solver", "sweeps": "sweeps",
    "als-l2": "als_l2", "burn-in": "burn_in", "samples": "samples", "patience": "patience", "select-by": "select_by",
    "categorical": "categorical", "numeric": "numeric", "min-count": "min_count", "hash-buckets": "hash_buckets",
    "seed": "random_state", "threads": "threads", "device": "device", "weight": "sample_weight"}
PARAMETER_OF_KEY = {parameter: parameter for parameter in PARAMETER_OF_FLAG.values()} | {"seed": "random_state"}
PARAMETER_OF_KEY.pop("sample_weight")
TEXT_VALUED = {"solver", "optimizer", "select_by", "device"}
COLUMN_NAMES = {"categorical", "numeric"}
_SECTION = r"(?:data|model|training)\.[a-z_]+"
_FLAG = re.compile(  # --flag, a value (a number, a word, names with commas) and the config key said beside it
    r"--(?P<flag>[a-z][a-z0-9-]*)"
    r"(?: (?P<value>'[^']*'(?:\"'\"'[^']*')*|(?!(?:or|and|to|is|in|for|with|says|sets|names|VALUE|instead)\b)"
    r"[\w.,:-]*\w))?"  # a shell-quoted name ('work class'), or a word or number not ending in a full stop
    r"(?: \((?P<key>" + _SECTION + r")\)|, (?P<listed>" + _SECTION + r")(?=\)))?")
_CONFIG_KEY = re.compile(r"(?<![\w'\[])(?:data|model|training)\.(?P<name>[a-z_]+)\b")  # data.min_count, not config['data']
_TOML = re.compile(r"(?P<key>\w+) = (?P<value>\w+) in the \[(?P<section>\w+)\] section")
_ESTIMATOR_LIST = re.compile(r'data=\{"(?P<kind>numeric|categorical)": \[(?P<names>[^\]]*)\]\}')


def in_estimator_words(message: str) -> str:
    """``message`` with the command's flags, TOML lines and ``Estimator(data=...)`` lists as the estimators take them."""
    message = _TOML.sub(lambda m: f"config={{{m['section']!r}: {{{m['key']!r}: {_python_value(m['value'])!r}}}}}",
                        message)
    message = _ESTIMATOR_LIST.sub(_as_names_parameter, message)
    message = message.replace("no --valid file", "no eval_set")  # (rows held out of X instead, as the log goes on)
    message = _FLAG.sub(_as_parameter, message)
    return _CONFIG_KEY.sub(lambda m: PARAMETER_OF_KEY.get(m["name"], m[0]), message)


def _as_parameter(match: re.Match) -> str:
    flag, value, key = match["flag"], match["value"], match["key"] or match["listed"]
    parameter = PARAMETER_OF_FLAG.get(flag)
    if parameter is None:
        if key is None:  # a flag of the command alone (--out, --resume): left as it is
            return match[0]
        section, name = key.split(".")
        if value is None:
            return f"config[{section!r}][{name!r}]"
        return f"config={{{section!r}: {{{name!r}: {_python_value(value)!r}}}}}"
    if value is None:
        return parameter
    if parameter in COLUMN_NAMES:  # one shell-quoted name, or names and commas
        names = (shlex.split(value)[0],) if value.startswith("'") else tuple(value.split(","))
        return f"{parameter}={names!r}"
    if parameter == "mlp":
        return f"mlp={tuple(int(width) for width in re.split('[,-]', value) if width.isdigit())!r}"
    return f"{parameter}={value!r}" if parameter in TEXT_VALUED else f"{parameter}={value}"


def _as_names_parameter(match: re.Match) -> str:
    try:
        names = tuple(json.loads(f"[{match['names']}]"))
    except ValueError:  # '...': the names left to the reader
        return f"{match['kind']}=[{match['names']}]"
    return f"{match['kind']}={names!r}"


def _python_value(text: str) -> object:
    """A flag's or TOML value as Python writes it: numbers and booleans as themselves, other words as text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


@contextmanager
def estimator_words() -> Iterator[None]:
    """Re-raise the library's errors raised in the block (same type) with their messages in the estimators' words."""
    try:
        yield
    except DataError as error:
        error.message = in_estimator_words(error.message)
        error.args = (str(error),)
        raise
    except DeepFMError as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (in_estimator_words(error.args[0]), *error.args[1:])
        raise
