"""``prefetch_row(table, r)`` for compiled passes over scattered table rows (numba; imported on first use).

A pass that reads and writes rows far apart (row-wise Adam on a batch's touched rows) waits on a cache miss
per row; asking for the row ``PREFETCH_AHEAD`` places on (LLVM's ``llvm.prefetch``) overlaps those misses
with the work on this one. It changes no value. Where this numba cannot lower it, ``prefetch_row`` is a no-op.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from deepfm.compiled import compiled

PREFETCH_AHEAD = 8  # rows: 2, 4 and 16 were no better for row-wise Adam, 32 slower (2026-12-04)


@intrinsic
def _llvm_prefetch_row(typingctx, table, r):
    """Prefetch, for writing and into every cache level, the first element of row ``r`` of a 2-d ``table``."""

    def codegen(context, builder, signature, args):
        table_type = signature.args[0]
        array = context.make_array(table_type)(context, builder, args[0])
        row = cgutils.get_item_pointer(context, builder, table_type, array,
                                       [args[1], context.get_constant(types.intp, 0)], wraparound=False)
        byte, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
                                                  "llvm.prefetch.p0i8")
        builder.call(prefetch, [builder.bitcast(row, byte), i32(1), i32(3), i32(1)])  # write, keep, data
        return context.get_dummy_value()

    return types.void(table, r), codegen


@compiled
def _no_prefetch(table, r):  # pragma: no cover - compiled
    pass


@compiled
def _prefetch_first_row(table):  # pragma: no cover - compiled
    _llvm_prefetch_row(table, 0)


def usable(check: Callable[[np.ndarray], None]) -> bool:
    """Whether ``check`` (a compiled pass that prefetches) compiles and runs on this numba."""
    try:
        check(np.zeros((1, 1), np.float32))
    except Exception:  # noqa: BLE001 - a numba or llvmlite without these internals: no prefetch, same results
        return False
    return True


prefetch_row = _llvm_prefetch_row if usable(_prefetch_first_row) else _no_prefetch
