"""The coordinate step that libFM's MCMC and ALS solvers share (Rendle, "Factorization Machines
with libFM", ACM TIST 2012, §4–5), compiled with numba.

The model ŷ(x) = w0 + Σ_l w_l x_l + ½ Σ_f [(Σ_l v_lf x_l)² − Σ_l v_lf² x_l²] is linear in each
single parameter θ: ŷ = g_θ + θ h_θ with h = x_l for w_l and h = x_l (q_f − v_lf x_l) for v_lf,
where q_f = Σ_j v_jf x_j. With residuals e = y − ŷ, noise precision α and a Gaussian prior
N(μ_θ, 1/λ_θ), θ's conditional posterior is Gaussian with

    precision  = α Σ_n h_n² + λ_θ
    mean       = (α Σ_n h_n (e_n + θ h_n) + λ_θ μ_θ) / precision

over the rows n where x_l ≠ 0, one column of the CSC matrix. A sweep draws θ ← mean + ε/√precision
for every feature in turn (ε from ``noise``; ε = 0 and μ = 0 give ALS's exact minimiser of
Σ e² + λ θ²) and updates e and q in O(nnz of the column). No Python runs per row or per non-zero.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from numba import njit


def columns_of(design: scipy.sparse.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of the design matrix in CSC (column l lists the rows holding feature l)."""
    csc = scipy.sparse.csc_matrix(design, dtype=np.float64)
    csc.sum_duplicates()
    return csc.indptr.astype(np.int64), csc.indices.astype(np.int64), csc.data


@njit(cache=True)
def predict_columns(indptr, indices, data, w0, w, v, out, q):  # pragma: no cover - compiled
    """ŷ of every row into ``out`` (N,) and q_f = Σ_l v_lf x_l into ``q`` (k, N), from the CSC columns."""
    num_rows, rank = out.shape[0], v.shape[1]
    squares = np.zeros(num_rows)
    out[:] = w0
    q[:] = 0.0
    for l in range(len(indptr) - 1):
        norm = 0.0
        for f in range(rank):
            norm += v[l, f] * v[l, f]
        for p in range(indptr[l], indptr[l + 1]):
            n, x = indices[p], data[p]
            out[n] += w[l] * x
            squares[n] += norm * x * x
            for f in range(rank):
                q[f, n] += v[l, f] * x
    for n in range(num_rows):
        pairwise = 0.0
        for f in range(rank):
            pairwise += q[f, n] * q[f, n]
        out[n] += 0.5 * (pairwise - squares[n])


@njit(cache=True)
def sweep_linear(indptr, indices, data, residual, w, prior_mean, prior_precision, alpha, noise):  # pragma: no cover
    """Draw every w_l in turn (h = x_l); ``residual`` (N,) follows."""
    for l in range(len(w)):
        hh, he = 0.0, 0.0
        for p in range(indptr[l], indptr[l + 1]):
            x = data[p]
            hh += x * x
            he += x * residual[indices[p]]
        precision = alpha * hh + prior_precision[l]
        mean = (alpha * (he + w[l] * hh) + prior_precision[l] * prior_mean[l]) / precision
        new = mean + noise[l] / np.sqrt(precision)
        step = new - w[l]
        w[l] = new
        for p in range(indptr[l], indptr[l + 1]):
            residual[indices[p]] -= step * data[p]


@njit(cache=True)
def sweep_factors(indptr, indices, data, residual, v, q_all, prior_mean, prior_precision, alpha,
                  noise):  # pragma: no cover - compiled
    """Draw every v_lf, factor by factor (h = x_l (q_f − v_lf x_l)); ``residual`` (N,) and the
    current q = X·V (``q_all``: (k, N), from ``predict_columns``) follow."""
    num_features, rank = v.shape
    for f in range(rank):
        q = q_all[f]
        for l in range(num_features):
            hh, he = 0.0, 0.0
            old = v[l, f]
            for p in range(indptr[l], indptr[l + 1]):
                x = data[p]
                h = x * (q[indices[p]] - old * x)
                hh += h * h
                he += h * residual[indices[p]]
            precision = alpha * hh + prior_precision[l, f]
            mean = (alpha * (he + old * hh) + prior_precision[l, f] * prior_mean[l, f]) / precision
            new = mean + noise[l, f] / np.sqrt(precision)
            step = new - old
            v[l, f] = new
            for p in range(indptr[l], indptr[l + 1]):
                n, x = indices[p], data[p]
                residual[n] -= step * x * (q[n] - old * x)
                q[n] += step * x


def predict_samples(design: scipy.sparse.spmatrix, w0: np.ndarray, w: np.ndarray, v: np.ndarray,
                    rows_per_block: int = 4096) -> np.ndarray:
    """(S, N) predictions of S parameter samples: w0 (S,), w (S, n), v (S, n, k), in blocks of rows."""
    csr = scipy.sparse.csr_matrix(design, dtype=np.float64)
    num_samples, num_features, rank = v.shape
    factors = v.transpose(1, 0, 2).reshape(num_features, num_samples * rank)
    norms = np.square(v).sum(axis=2).T  # (n, S)
    out = np.empty((num_samples, csr.shape[0]))
    for start in range(0, csr.shape[0], rows_per_block):
        block = csr[start : start + rows_per_block]
        q = (block @ factors).reshape(-1, num_samples, rank)
        pairwise = 0.5 * (np.square(q).sum(axis=2) - block.multiply(block) @ norms)
        out[:, start : start + block.shape[0]] = (w0[:, None] + (block @ w.T).T + pairwise.T)
    return out
