"""DPO and ORPO data-parallel: engine/train/distributed.py's trainer with
engine/train/preference.py's pairs, losses and metrics.

Rank r of R trains the pairs r, r + R, ... of every global batch (ShardedStream). Each rank's
loss is its part of the global batch's loss: the sums over its pairs divided by the global
batch's pair count (ORPO's NLL by the global count of chosen trained tokens), which the
stream gives every batch, so the gradients summed across ranks are the single process's on the
whole batch. The metric sums travel in the step's one all_sum. The reference log-probs are
computed once per run as alone, each rank its share of the batches, and summed, so every rank
holds the same values; a resumed run takes rank 0's kept file (only rank 0 writes)."""
from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..events import TailorError
from .distributed import DistributedTrainer, broadcast_array
from .preference import PreferenceTrainer, reference_logps, summarize


class DistributedPreferenceTrainer(DistributedTrainer, PreferenceTrainer):
    """One rank of a data-parallel DPO/ORPO run; see module doc."""

    def _compiled_step(self):
        return self._recording(*DistributedTrainer._compiled_step(self))

    def _pair_streams(self) -> dict:
        return {"train": self.train.stream, "valid": self.valid}

    def _reference_values(self, stream, progress) -> np.ndarray:
        if not self._collective:
            return super()._reference_values(stream, progress)
        local = reference_logps(self.model, stream, self.cancel, progress,
                                mine=lambda k: k % self.size == self.rank)
        return np.array(mx.distributed.all_sum(mx.array(local), group=self.group))

    def _kept_reference(self, file, streams) -> dict | None:
        """Rank 0 decides (only it has the kept file): every rank gets its values, or every
        rank computes them, or every rank stops with its refusal."""
        if not self._collective:
            return super()._kept_reference(file, streams)
        kept, refusal, status = None, None, 0
        if self.rank == 0:
            try:
                kept = super()._kept_reference(file, streams)
                status = 0 if kept is None else 1
            except TailorError as e:
                refusal, status = e, 2
        status = int(broadcast_array(mx.array([status], dtype=mx.int32), self.group).item())
        if status == 2:
            raise refusal or TailorError("rank 0 refused to resume this run (it says why)")
        if status == 0:
            return None
        return {k: np.array(broadcast_array(mx.array(
                    kept[k] if kept else np.zeros((len(s.examples), 2), np.float32)),
                    self.group)) for k, s in streams.items()}

    def evaluate(self) -> float:
        """During the run: this rank's share of the validation batches, their metric sums
        summed over the ranks (each batch is computed whole, as alone)."""
        if not self._collective:
            return super().evaluate()
        local = self._valid_sums(lambda i: i % self.size == self.rank)
        total = mx.distributed.all_sum(mx.array(local.astype(np.float32)), group=self.group)
        self._val_metrics = summarize(np.array(total))
        return self._val_metrics["loss"]
