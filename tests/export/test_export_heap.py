"""The encoders' freed work arrays stay in the heap for the next piece instead of being
handed back to the kernel and faulted in afresh (engine/export/heap.py): on a 0.4B-model
export glibc's default thresholds cost ~670k page faults and a quarter of the export's CPU
time. Speed itself is measured in bench/export.py."""
from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from engine.export import block_quants, heap, imatrix_quants, iq4_quants, kquants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc's mallopt: Linux only")


def _faults(fn) -> int:
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


def _work_arrays_of_several_sizes() -> None:
    # as pieces of different tensors and types come and go (1-9 MiB each, all touched)
    arrays = [np.ones(size, np.uint8) for size in (6 << 20, 3 << 20, 9 << 20, 1 << 20)]
    del arrays


@pytest.mark.parametrize("encode", [
    block_quants.quantize_q5_0, lambda w: kquants.quantize_q4_k(w, threads=1),
    iq4_quants.quantize_iq4_xs,
    lambda w: imatrix_quants.quantize_weighted(w, "Q4_K", np.ones(w.shape[1], np.float32))],
    ids=["q5_0", "q4_k", "iq4_xs", "weighted_q4_k"])
def test_after_an_encoder_ran_freed_memory_is_reused_not_faulted_in_again(encode):
    w = (np.random.default_rng(0).standard_normal((64, 4096), dtype=np.float32)
         * 0.02).astype(np.float16)
    encode(w)  # any encoder keeps freed buffers from then on
    _work_arrays_of_several_sizes()  # the first round may grow the heap
    faults = _faults(lambda: [_work_arrays_of_several_sizes() for _ in range(4)])
    # glibc's defaults: ~7000 page faults here (mmapped anew or trimmed away each round)
    assert faults < 100, f"{faults} page faults reallocating 19 MiB of work arrays 4 times"


def test_keep_freed_buffers_is_applied_once_and_reports_it():
    assert heap.keep_freed_buffers() is True
    assert heap.keep_freed_buffers() is True
