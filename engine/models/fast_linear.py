"""The full-precision linear layers' ``x @ W.T`` computed as ``x @ contiguous(W.T)``, with the
backward pass written out (``dx = g @ W``, ``dW = g.T @ x``): the same sums in the same order.

Why: MLX's CPU wheel for Linux calls the reference BLAS (netlib's sgemm, no blocking), whose
transposed-B case is 2-3.5x slower than the plain case for a layer's shapes (bench shapes,
352 x 192 -> 512: 54 vs 26 ms; the 8192-token output layer 2.6 vs 1.5 s per 1,024 rows), while
the copy of W.T costs ~0.2 ms. An nn.Linear's forward is the transposed case; the backward's
``g @ W`` is already the plain one, which automatic differentiation of ``x @ contiguous(W.T)``
would turn into the slow case, hence the custom VJP. On the bench's Qwen2-style model a LoRA
step (forward + backward) is ~22% less CPU, with bit-identical loss and gradients (the sgemm
loops add the same products in the same order; tests/train/test_fast_linear.py). On a GPU
(Metal on a Mac) the transposed case is native and the copy only costs bandwidth, so the swap
is made only where MLX computes on the CPU (``layout_pays``).
"""
from __future__ import annotations

from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn


@mx.custom_function
def matmul_t(x: mx.array, w: mx.array) -> mx.array:
    """``x @ w.T`` (w: [out, in]) through a contiguous copy of ``w.T``."""
    return x @ mx.contiguous(w.T)


@matmul_t.vjp
def _matmul_t_vjp(primals, cotangent, output):
    x, w = primals
    g2 = cotangent.reshape(-1, cotangent.shape[-1])
    # an unused cotangent (a frozen weight's) is never evaluated: MLX is lazy
    return cotangent @ w, g2.T @ x.reshape(-1, x.shape[-1])


@mx.custom_function
def addmm_t(b: mx.array, x: mx.array, w: mx.array) -> mx.array:
    """``b + x @ w.T`` as nn.Linear computes it (addmm: the bias is the accumulator's start)."""
    return mx.addmm(b, x, mx.contiguous(w.T))


@addmm_t.vjp
def _addmm_t_vjp(primals, cotangent, output):
    b, x, w = primals
    g2 = cotangent.reshape(-1, cotangent.shape[-1])
    return g2.sum(axis=0), cotangent @ w, g2.T @ x.reshape(-1, x.shape[-1])


class _FastLinear(nn.Linear):
    """nn.Linear with the fast layout; swapped in by ``fast_linears`` only while a loss runs."""

    def __call__(self, x):
        if "bias" in self:
            return addmm_t(self["bias"], x, self["weight"])
        return matmul_t(x, self["weight"])


def layout_pays() -> bool:
    """True where MLX computes on the CPU (the BLAS whose transposed case is slow); a GPU's
    matmul reads W.T in place, so there the layers keep nn.Linear's own forward."""
    return mx.default_device() == mx.cpu


def plain_linears(model) -> list[nn.Module]:
    """Every module of ``model`` whose type is exactly nn.Linear (quantized layers, LoRA/DoRA
    wrappers and subclasses keep their own forward; a LoRA layer's base ``linear`` is one);
    none where the layout does not pay (``layout_pays``)."""
    if not layout_pays():
        return []
    return [m for _, m in model.named_modules() if type(m) is nn.Linear]


@contextmanager
def fast_linears(modules: list[nn.Module]):
    """Within the block, ``modules`` (from ``plain_linears``) compute with ``matmul_t``; their
    class is restored after, so the model outside (fuse, save, generate) is untouched."""
    for m in modules:
        m.__class__ = _FastLinear
    try:
        yield
    finally:
        for m in modules:
            m.__class__ = nn.Linear


def embedding_as_linear(embedding):
    """The tied output layer ``h @ E.T`` of a full-precision nn.Embedding with ``matmul_t``
    (None for another embedding type, e.g. a quantized one, or where the layout does not pay:
    its own ``as_linear`` then)."""
    if type(embedding) is not nn.Embedding or not layout_pays():
        return None
    return lambda h: matmul_t(h, embedding["weight"])
