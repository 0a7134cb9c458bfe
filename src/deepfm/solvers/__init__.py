"""Solvers that fit a factorization machine without gradients: Gibbs sampling (``gibbs``) and
alternating least squares (``als``) over Rendle's design matrix, as libFM does."""
