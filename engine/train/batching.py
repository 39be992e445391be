"""Length-bucketed batches whose order is a pure function of (seed, epoch).

Examples of similar length share a batch, so padding is small; each batch is padded to a
multiple of ``PAD_MULTIPLE`` tokens and its trained positions to a multiple of
``TARGET_MULTIPLE`` so the compiled step sees a bounded number of shapes. Because the order of
epoch ``e`` depends only on ``(seed, e)``, micro-batch ``m`` is the same whether a run went
straight through or was resumed, which is what makes resume exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np

from .pack_plan import pack_rows

PAD_MULTIPLE = 8
TARGET_MULTIPLE = 32
LENGTH_BUCKET = 16  # examples whose lengths fall in the same 16-token band may swap batches


@dataclass
class Batch:
    inputs: mx.array      # [B, L] token ids (positions 0..L-1 of the padded examples)
    targets: mx.array     # [B*L] next-token ids, flattened
    index: mx.array       # [K] flat positions whose target is trained (padded with 0)
    weight: mx.array      # [K] 1.0 for real trained positions, 0.0 for padding
    n_tokens: int         # tokens in the batch (real, not padding)
    n_trained: int        # trained tokens
    segments: mx.array | None = None  # [B, L] packed rows: example 1, 2, ... per row, 0 = pad


def _round_up(n: int, m: int) -> int:
    return max(m, m * math.ceil(n / m))


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int
                  ) -> list[list[int]]:
    """The example indices of every batch of ``epoch``, in training order."""
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch, 0x7A11])
    jitter = rng.random(n)
    band = np.asarray(lengths) // LENGTH_BUCKET
    order = np.lexsort((jitter, band))  # by length band, random within a band
    batches = [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def batches_per_epoch(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


class BatchStream:
    """Micro-batch ``m`` of a run, for any ``m``: epoch ``m // per_epoch`` at position
    ``m % per_epoch``. Epoch orders are computed once and cached.

    With ``pack`` the units batched are packed rows (engine/train/packing.py: examples up to
    ``max_seq_length`` tokens per row, packed once per run), ``batch_size`` of them a batch."""

    def __init__(self, examples, batch_size: int, max_seq_length: int, seed: int,
                 pad_id: int = 0, pack: bool = False):
        self.examples = examples
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.seed = seed
        self.pad_id = pad_id
        self.example_lengths = [min(len(e.tokens), max_seq_length) for e in examples]
        self.rows = pack_rows(self.example_lengths, max_seq_length) if pack else None
        self.lengths = ([sum(self.example_lengths[i] for i in r) for r in self.rows] if pack
                        else self.example_lengths)
        self.n_units = len(self.lengths)
        self.per_epoch = batches_per_epoch(self.n_units, batch_size)
        self._orders: dict[int, list[list[int]]] = {}

    def position(self, micro: int) -> tuple[int, int]:
        return divmod(micro, self.per_epoch)

    def indices(self, micro: int) -> list[int]:
        epoch, pos = self.position(micro)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_batches(self.lengths, self.batch_size, self.seed,
                                                 epoch)}
        return self._orders[epoch][pos]

    def batch(self, micro: int) -> Batch:
        return self._collate(self.indices(micro))

    def _collate(self, units: list[int]) -> Batch:
        if self.rows is None:
            return collate([self.examples[i] for i in units], self.max_seq_length, self.pad_id)
        return collate_packed([[self.examples[i] for i in self.rows[r]] for r in units],
                              self.max_seq_length, self.pad_id)

    def all_in_order(self):
        """One pass, unshuffled (validation): batches sorted by length."""
        order = sorted(range(self.n_units), key=lambda i: self.lengths[i])
        for i in range(0, len(order), self.batch_size):
            yield self._collate(order[i:i + self.batch_size])

    def padding(self, epoch: int = 0) -> tuple[int, int]:
        """(padded positions, all positions) of one epoch's batches as this stream makes
        them."""
        pad = total = 0
        for units in epoch_batches(self.lengths, self.batch_size, self.seed, epoch):
            # an example of n tokens fills n - 1 input positions
            used = [self.lengths[u] - (len(self.rows[u]) if self.rows else 1) for u in units]
            width = _round_up(max(used), PAD_MULTIPLE)
            pad += width * len(units) - sum(used)
            total += width * len(units)
        return pad, total


def collate(examples, max_seq_length: int, pad_id: int = 0) -> Batch:
    """Pad a list of examples into a Batch; the loss covers target tokens whose mask is 1."""
    seqs = [list(e.tokens[:max_seq_length]) for e in examples]
    masks = [list(e.loss_mask[:max_seq_length]) for e in examples]
    width = _round_up(max(len(s) for s in seqs) - 1, PAD_MULTIPLE)
    B = len(seqs)
    inputs = np.full((B, width), pad_id, dtype=np.int32)
    targets = np.full((B, width), pad_id, dtype=np.int32)
    trained = np.zeros((B, width), dtype=bool)
    n_tokens = 0
    for b, (s, m) in enumerate(zip(seqs, masks)):
        n = len(s) - 1
        if n <= 0:
            continue
        inputs[b, :n] = s[:-1]
        targets[b, :n] = s[1:]
        trained[b, :n] = np.asarray(m[1:], dtype=bool)
        n_tokens += len(s)
    return _batch(inputs, targets, trained, n_tokens)


def _batch(inputs, targets, trained, n_tokens: int, segments=None) -> Batch:
    flat = np.flatnonzero(trained.reshape(-1)).astype(np.int32)
    k = _round_up(len(flat), TARGET_MULTIPLE)
    index = np.zeros(k, dtype=np.int32)
    index[:len(flat)] = flat
    weight = np.zeros(k, dtype=np.float32)
    weight[:len(flat)] = 1.0
    return Batch(mx.array(inputs), mx.array(targets.reshape(-1)), mx.array(index),
                 mx.array(weight), n_tokens, int(len(flat)),
                 None if segments is None else mx.array(segments))


def collate_packed(rows, max_seq_length: int, pad_id: int = 0) -> Batch:
    """Rows of examples into one Batch: each example's inputs and targets side by side in its
    row, exactly as ``collate`` lays out one example, and ``segments`` saying which is which."""
    seqs = [[list(e.tokens[:max_seq_length]) for e in row] for row in rows]
    masks = [[list(e.loss_mask[:max_seq_length]) for e in row] for row in rows]
    used = [sum(max(0, len(s) - 1) for s in row) for row in seqs]
    width = _round_up(max(used), PAD_MULTIPLE)
    B = len(rows)
    inputs = np.full((B, width), pad_id, dtype=np.int32)
    targets = np.full((B, width), pad_id, dtype=np.int32)
    trained = np.zeros((B, width), dtype=bool)
    segments = np.zeros((B, width), dtype=np.int32)
    n_tokens = 0
    for b, (row, row_masks) in enumerate(zip(seqs, masks)):
        at = 0
        for seg, (s, m) in enumerate(zip(row, row_masks), start=1):
            n = len(s) - 1
            if n <= 0:
                continue
            inputs[b, at:at + n] = s[:-1]
            targets[b, at:at + n] = s[1:]
            trained[b, at:at + n] = np.asarray(m[1:], dtype=bool)
            segments[b, at:at + n] = seg
            at += n
            n_tokens += len(s)
    return _batch(inputs, targets, trained, n_tokens, segments)
