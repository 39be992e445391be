"""The arithmetic of a merge, on one adapted layer at a time (numpy, float32 unless said).

A LoRA layer adds ``x @ A @ B * scale`` to ``x @ W.T``: its weight change is
``dW = scale * B.T @ A.T`` (out x in), with ``A`` (in x r) and ``B`` (r x out) as mlx-lm stores
``lora_a`` and ``lora_b``. TIES and DARE follow mergekit's conventions
(``mergekit/merge_methods/generalized_task_arithmetic.py``, ``sparsify.py``): weights multiply
the changes before the sign election, the sign of an entry is that of the weighted sum (0
counts as +), TIES divides by the summed weights of the agreeing entries, DARE TIES does not.
"""
from __future__ import annotations

import zlib

import numpy as np


def lora_delta(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """``scale * B.T @ A.T`` in float32, in mlx-lm's own order (``LoRALinear.fuse``)."""
    return (np.float32(scale) * b.T.astype(np.float32)) @ a.T.astype(np.float32)


def concat_factors(factors: list[tuple[np.ndarray, np.ndarray, float]], weights: list[float],
                   out_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """One LoRA pair whose change is the exact weighted sum of the parents' changes:
    ``A = [A1 | A2 | ...]``, ``B = [c1 B1; c2 B2; ...]`` with ``ci = wi * scale_i / out_scale``
    (a weight of 1 at the shared scale leaves the parent's ``B`` bit for bit)."""
    a = np.concatenate([f[0] for f in factors], axis=1)
    blocks = []
    for (_, b, scale), w in zip(factors, weights):
        c = w * scale / out_scale
        blocks.append(b if c == 1.0 else (b.astype(np.float32) * np.float32(c)).astype(b.dtype))
    return a, np.concatenate(blocks, axis=0)


def _split(u: np.ndarray, s: np.ndarray, vt: np.ndarray, rank: int
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, B, energy kept) of ``u @ diag(s) @ vt`` cut to ``rank`` (zero-padded above the
    change's own rank, so every layer of one adapter has the same shape)."""
    total = float(np.sum(s.astype(np.float64) ** 2))
    k = min(rank, len(s))
    kept = float(np.sum(s[:k].astype(np.float64) ** 2))
    root = np.sqrt(s[:k]).astype(np.float32)
    a = np.zeros((vt.shape[1], rank), np.float32)
    b = np.zeros((rank, u.shape[0]), np.float32)
    a[:, :k] = vt[:k].T.astype(np.float32) * root
    b[:k] = (u[:, :k].astype(np.float32) * root).T
    return a, b, (kept / total if total > 0 else 1.0)


def low_rank_from_factors(a: np.ndarray, b: np.ndarray, scale: float, rank: int
                          ) -> tuple[np.ndarray, np.ndarray, float]:
    """The best rank-``rank`` LoRA pair (scale 1) for ``scale * B.T @ A.T`` and the share of its
    energy (squared Frobenius norm) kept; exact truncated SVD without forming the out x in
    matrix: QR of each factor, then the SVD of the small core."""
    qa, ra = np.linalg.qr(a.astype(np.float64))            # A = Qa Ra   (in x k)
    qb, rb = np.linalg.qr(b.T.astype(np.float64))          # B.T = Qb Rb (out x k)
    u, s, vt = np.linalg.svd(scale * rb @ ra.T)            # dW = Qb (u s vt) Qa.T
    return _split(qb @ u, s, vt @ qa.T, rank)


def low_rank_from_dense(delta: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The best rank-``rank`` LoRA pair (scale 1) for a full out x in change, and the share of
    its energy kept: the top eigenvectors V of the smaller Gram matrix (D.T D or D D.T) span
    the top singular vectors, and D ~ D V V.T. One matrix product and a small eigh instead of
    the full SVD (45 s for a 4864 x 896 matrix on a busy 2-core machine, against about 2 s)."""
    out_dims, in_dims = delta.shape
    small_in = in_dims <= out_dims
    gram = delta.T @ delta if small_in else delta @ delta.T
    values, vectors = np.linalg.eigh(gram.astype(np.float64))
    del gram
    k = min(rank, len(values))
    top = vectors[:, ::-1][:, :k].astype(np.float32)       # largest eigenvalues first
    proj = delta @ top if small_in else delta.T @ top       # (out x k) or (in x k)
    norms = np.sqrt(np.sum(proj.astype(np.float64) ** 2, axis=0))  # the singular values
    root = np.sqrt(norms).astype(np.float32)
    inv = np.where(norms > 0, 1.0 / np.where(root > 0, root, 1), 0).astype(np.float32)
    a = np.zeros((in_dims, rank), np.float32)
    b = np.zeros((rank, out_dims), np.float32)
    if small_in:   # D ~ (D V) V.T: A = V sqrt(s), B = (D V / sqrt(s)).T
        a[:, :k], b[:k] = top * root, (proj * inv).T
    else:          # D ~ U (U.T D): A = D.T U / sqrt(s), B = (U sqrt(s)).T
        a[:, :k], b[:k] = proj * inv, (top * root).T
    flat = delta.ravel()
    total = float(np.dot(flat, flat))
    kept = float(np.sum(norms ** 2))
    return a, b, (min(kept / total, 1.0) if total > 0 else 1.0)


CHUNK_ROWS = 256  # rows of a change made at a time: a few MB, whatever the matrix


def trim_threshold(change: np.ndarray, density: float) -> float:
    """The magnitude of ``change``'s ``int(density * size)``-th largest entry: TIES keeps the
    entries at or above it (mergekit's ``magnitude``; only exact ties at the threshold could
    keep more than k, and zeros add nothing). Overwrites ``change`` (no copy is made)."""
    if density >= 1:
        return 0.0
    k = int(density * change.size)
    if k <= 0:
        return float("inf")
    flat = np.abs(change, out=change).ravel()
    flat.partition(flat.size - k)
    return float(flat[flat.size - k])


def magnitude_trim(delta: np.ndarray, density: float) -> np.ndarray:
    """``delta`` with all but its ``int(density * size)`` largest-magnitude entries set to 0."""
    threshold = trim_threshold(delta.copy(), density)
    delta[np.abs(delta) < threshold] = 0
    return delta


def dare_rng(seed: int, parent: int, layer: str) -> np.random.Generator:
    """DARE's generator for one parent's change to one layer: seeded by (seed, parent index,
    crc32 of the layer name), so a layer's mask does not depend on the order layers are
    processed in. The mask is ``rng.random(shape, float32) < density`` drawn row-major (drawn
    in row chunks, the same numbers come out)."""
    return np.random.default_rng([seed, parent, zlib.crc32(layer.encode())])


def dare_keep_mask(shape: tuple[int, ...], density: float, seed: int, parent: int,
                   layer: str) -> np.ndarray:
    """Which entries DARE keeps in a whole change (see ``dare_rng``)."""
    return dare_rng(seed, parent, layer).random(shape, dtype=np.float32) < np.float32(density)


def dare_drop(delta: np.ndarray, density: float, keep: np.ndarray) -> np.ndarray:
    """Entries not in ``keep`` set to 0, the rest scaled by 1/density (Yu et al. 2023)."""
    if density >= 1:
        return delta
    delta *= keep
    delta *= np.float32(1.0 / density)
    return delta


def elect_and_mix(weighted: list[np.ndarray], weights: list[float], normalize: bool
                  ) -> np.ndarray:
    """TIES' sign election on already weighted (and trimmed) changes: each entry's sign is that
    of the sum (>= 0: +), the entries agreeing with it are summed and, with ``normalize``,
    divided by the weights of those entries (1 where none agree)."""
    total = np.zeros_like(weighted[0])
    for d in weighted:
        total += d
    sign = np.where(total >= 0, np.float32(1), np.float32(-1))
    del total
    mixed = np.zeros_like(sign)
    divisor = np.zeros_like(sign) if normalize else None
    for d, w in zip(weighted, weights):
        agree = np.sign(d) == sign
        d *= agree
        mixed += d
        if divisor is not None:
            divisor += agree * np.float32(w)
    if divisor is not None:
        divisor[divisor == 0] = 1
        mixed /= divisor
    return mixed


def streamed_merge(rows_of, full_of, shape: tuple[int, int], weights: list[float],
                   method: str, density: float, combine: str = "sum", seed: int = 0,
                   layer: str = "") -> np.ndarray:
    """TIES or DARE on full changes made a few rows at a time, so only the result and one
    chunk per parent exist at once (TIES' thresholds: one whole change at a time, first).

    ``rows_of(i, r0, r1)``: parent i's change rows r0:r1 (a new float32 array); ``full_of(i)``:
    its whole change (TIES only). TIES: trim to the top ``density``, weight, elect signs,
    weighted mean of the agreeing entries (mergekit ``ties``). DARE: keep at random with
    probability ``density`` (``dare_rng``), rescale by 1/density, weight, then ``combine``:
    sum, or elect signs without averaging (mergekit ``dare_ties``)."""
    n = len(weights)
    thresholds = [trim_threshold(full_of(i), density) for i in range(n)] \
        if method == "ties" else []
    rngs = [dare_rng(seed, i, layer) for i in range(n)] if method == "dare" else []
    out = np.empty(shape, np.float32)
    for r0 in range(0, shape[0], CHUNK_ROWS):
        r1 = min(r0 + CHUNK_ROWS, shape[0])
        parts = []
        for i, w in enumerate(weights):
            d = rows_of(i, r0, r1)
            if method == "ties":
                d[np.abs(d) < thresholds[i]] = 0
            elif density < 1:
                dare_drop(d, density, rngs[i].random(d.shape, dtype=np.float32)
                          < np.float32(density))
            d *= np.float32(w)
            parts.append(d)
        if method == "ties":
            out[r0:r1] = elect_and_mix(parts, weights, normalize=True)
        elif combine == "ties":
            out[r0:r1] = elect_and_mix(parts, weights, normalize=False)
        else:
            out[r0:r1] = sum(parts[1:], parts[0])
    return out


def ties_merge(deltas: list[np.ndarray], weights: list[float], density: float) -> np.ndarray:
    """TIES on whole changes (``streamed_merge`` reading them)."""
    return streamed_merge(lambda i, r0, r1: deltas[i][r0:r1].astype(np.float32),
                          lambda i: deltas[i].astype(np.float32), deltas[0].shape, weights,
                          "ties", density)


def dare_merge(deltas: list[np.ndarray], weights: list[float], density: float, combine: str,
               seed: int, layer: str) -> np.ndarray:
    """DARE on whole changes (``streamed_merge`` reading them)."""
    return streamed_merge(lambda i, r0, r1: deltas[i][r0:r1].astype(np.float32), None,
                          deltas[0].shape, weights, "dare", density, combine, seed, layer)
