"""``prefetch_row(table, r)`` for compiled passes over scattered table rows (numba; imported on first use).

A pass that reads and writes rows far apart (row-wise Adam on a batch's touched rows) waits on a cache miss
per row; asking for a row some places ahead (LLVM's ``llvm.prefetch``) overlaps those misses with the work on
this one. It changes no value. Where this numba cannot lower it, ``prefetch_row`` is a no-op. numba's cache of a
pass that calls it does not see edits to this module: clear the pass's cache (its ``__pycache__/*.nbi``) after one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from deepfm.compiled import compiled


@intrinsic
def _llvm_prefetch_row(typingctx, table, r):
    """Prefetch, for writing and into every cache level, the first and the last element of row ``r`` of a 2-d
    ``table`` (a row of k 10 float32 crosses a 64-byte line half the time)."""
    if not (isinstance(table, types.Array) and table.ndim == 2 and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        table_type, row_type = signature.args
        array = context.make_array(table_type)(context, builder, args[0])
        row = context.cast(builder, args[1], row_type, types.intp)
        width = cgutils.unpack_tuple(builder, array.shape, 2)[1]
        byte, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
                                                  "llvm.prefetch.p0i8")
        for column in (context.get_constant(types.intp, 0), builder.sub(width, context.get_constant(types.intp, 1))):
            element = cgutils.get_item_pointer(context, builder, table_type, array, [row, column], wraparound=False)
            builder.call(prefetch, [builder.bitcast(element, byte), i32(1), i32(3), i32(1)])  # write, keep, data
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
