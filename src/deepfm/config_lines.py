"""Where each key of a TOML or YAML (or JSON, read as YAML) config file is set, so a setting that fails validation
is named ``file:line`` as bad data is. Neither ``tomllib`` nor ``yaml.safe_load`` keeps positions: YAML's
composed nodes carry them; TOML's lines are scanned for ``[table]`` headers and ``key = `` lines
(dotted and quoted keys and ``[[arrays]]`` included, multi-line strings passed over; a key inside an
inline table or a multi-line value is found at its enclosing key's line, through ``line_of``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

KeyLines = Mapping[tuple[str, ...], "int | None"]  # (section, key, ...) -> 1-based line; None: set elsewhere

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*"
_TABLE = re.compile(rf"^\s*\[\s*({_KEY})\s*\]\s*(?:#.*)?$")
_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_KEY})\s*\]\]\s*(?:#.*)?$")
_ASSIGNMENT = re.compile(rf"^\s*({_KEY})\s*=")
_PART = re.compile(rf"{_BARE}|{_QUOTED}")


def key_lines(path: str | Path) -> dict[tuple[str, ...], int]:
    """The line of every key set in the config file at ``path`` (TOML, YAML or JSON); {} for another kind."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return _toml_lines(text)
    if suffix in (".yaml", ".yml", ".json"):
        return _yaml_lines(text)
    return {}


def line_of(lines: KeyLines, loc: Sequence[object]) -> int | None:
    """The line of the key at ``loc`` (a validation error's location), or of its nearest enclosing key;
    None where that key was set elsewhere (``unless_set``) or nowhere in the file."""
    path = tuple(str(part) for part in loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def unless_set(lines: KeyLines, settings: Mapping[str, object]) -> dict[tuple[str, ...], int | None]:
    """``lines`` with None for every key that ``settings`` (a nested mapping: the flags') sets, and for those
    inside them: an error in a value a flag gave is not the file's, nor its section's."""
    given: dict[tuple[str, ...], None] = {}

    def walk(node: Mapping[str, object], path: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, path + (str(key),))
            else:
                given[path + (str(key),)] = None

    walk(settings, ())
    inside = {path: None for path in lines if any(path[: len(key)] == key for key in given)}
    return {**lines, **inside, **given}


def _parts(key: str) -> tuple[str, ...]:
    return tuple(part[1:-1] if part[0] in "\"'" else part for part in _PART.findall(key))


def _toml_lines(text: str) -> dict[tuple[str, ...], int]:
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string = None  # the delimiter of a multi-line string the line is inside, if any
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2:
                in_string = None
            continue
        header = _TABLE.match(line) or _ARRAY_TABLE.match(line)
        if header:
            table = _parts(header.group(1))
            lines.setdefault(table, number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment:
            key = table + _parts(assignment.group(1))
            for end in range(len(table) + 1, len(key) + 1):  # a dotted key defines its prefixes there too
                lines.setdefault(key[:end], number)
            rest = line[assignment.end():]
            for delimiter in ('"""', "'''"):
                if rest.count(delimiter) % 2:  # a multi-line string opens here
                    in_string = delimiter
    return lines


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    import yaml

    lines: dict[tuple[str, ...], int] = {}

    def walk(node: object, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                inner = path + (str(key.value),)
                lines[inner] = key.start_mark.line + 1  # a key given twice: its last value is the one loaded
                walk(value, inner)

    try:
        walk(yaml.compose(text), ())
    except yaml.YAMLError:  # the file parsed (load_config_file) but not as one document: no lines
        return {}
    return lines
