"""Where the last whole row of delimited text ends, read as Arrow and Python's csv read quotes: a quote opens a
value only at a field's start, "" inside a value is a quote, and a quote anywhere else is text (5'11").

The cut of a chunk where its quotes do not pair up (``readers._record_end`` counts them where they do): one pass
over the bytes, compiled (numba, loaded here only), with no limit on a value's length.
"""

from __future__ import annotations

import numpy as np

from deepfm.compiled import compiled

_QUOTE, _LINE_END = ord('"'), ord("\n")
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = 0, 1, 2, 3


@compiled
def _last_row_end(text: np.ndarray, delimiter: int) -> int:
    state, last = _FIELD_START, 0
    for i in range(len(text)):
        c = text[i]
        if state == _QUOTED:
            if c == _QUOTE:
                state = _QUOTE_IN_QUOTED
        elif state == _QUOTE_IN_QUOTED and c == _QUOTE:  # "" within the value
            state = _QUOTED
        elif c == _LINE_END:
            state, last = _FIELD_START, i + 1
        elif c == delimiter:
            state = _FIELD_START
        elif c == _QUOTE and state == _FIELD_START:
            state = _QUOTED
        else:  # text, or text after a value's closing quote
            state = _UNQUOTED
    return last


def last_row_end(buffer, length: int, delimiter: bytes) -> int:
    """The end of the last row of ``buffer[:length]`` (which begins at a row's start) whose line end lies outside
    quoted values; 0 if there is none."""
    return int(_last_row_end(np.frombuffer(buffer, np.uint8, length), delimiter[0]))
