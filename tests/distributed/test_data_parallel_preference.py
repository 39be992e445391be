"""DPO and ORPO data-parallel on 2 local ranks (mlx.launch, ring backend on 127.0.0.1): the same
run as one process with the same global batch of pairs (weights, every step's loss and
metrics, validation), rank 0 alone writing the adapter and the kept reference."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from engine import library
from engine.train.preference import REFERENCE_FILE
from tests.distributed.test_data_parallel import TOLERANCE, _manifest, _max_diff, _weights
from tests.preference.test_train_preference import write_pairs
from tests.train.conftest import events_of, run_tailor

# no dropout (each rank draws its own masks); grad accumulation 2; batch 4 pairs = 2 per rank
ARGS = ["--iters", "6", "--save-every", "3", "--eval-every", "3", "--learning-rate", "2e-3",
        "--rank", "4", "--dropout", "0", "--batch-size", "4", "--grad-accumulation", "2",
        "--baseline-prompts", "0", "--quiet", "--events", "-"]


def _train(model, data, name: str, *extra: str):
    done = run_tailor("train", "--model", str(model), "--data", str(data), "--name", name,
                      *ARGS, *extra, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return events_of(done.stdout)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_two_ranks_equal_one_process_with_the_same_global_batch_of_pairs(tiny_model, tmp_path,
                                                                         objective):
    model = tiny_model("qwen2")
    data = write_pairs(tmp_path / "pairs.jsonl", n=30)  # 7 batches an epoch: the last of 2
    _train(model, data, "one", "--objective", objective)
    events = _train(model, data, "two", "--objective", objective, "--ranks", "2")
    diff = _max_diff(_weights("one"), _weights("two"))
    assert diff < TOLERANCE, diff
    a, b = _manifest("one"), _manifest("two")
    assert b["distributed"]["ranks"] == 2 and a["distributed"]["ranks"] == 1
    assert b["trained_tokens"] == a["trained_tokens"]
    for split in ("train", "valid"):
        one, two = a["metrics_history"][split], b["metrics_history"][split]
        assert [s for s, _ in one] == [s for s, _ in two] and one
        for (_, v1), (_, v2) in zip(one, two):
            for key in ("loss", "reward_margin", "chosen_logp", "rejected_logp"):
                assert _close(v1[key], v2[key]), (split, key, v1, v2)
            assert v1["reward_ties"] == v2["reward_ties"]
    for (s1, l1), (s2, l2) in zip(a["loss_history"]["train"], b["loss_history"]["train"],
                                  strict=True):
        assert s1 == s2 and _close(l1, l2)
    assert [e["event"] for e in events].count("finished") == 1
    if objective == "dpo":  # the reference each rank computed its share of, kept by rank 0
        kept = [mx.load(str(library.get_adapter(n).path / "checkpoints" / REFERENCE_FILE))
                for n in ("one", "two")]
        for k in ("train", "valid"):
            np.testing.assert_array_equal(np.array(kept[0][k]), np.array(kept[1][k]))
