"""How large a request the server accepts (its own module: ``deepfm serve --help`` reads the defaults
without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Largest request accepted; beyond either, 413."""

    max_rows: int = 4096
    max_bytes: int = 8 << 20
