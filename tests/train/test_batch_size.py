"""A training set smaller than one batch is refused before the weights load, naming the file and
the counts, and nothing is created or lost."""
from __future__ import annotations

import pytest

from engine import library
from engine.paths import adapters_dir
from engine.events import ListReporter, Progress, TailorError
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree

from .conftest import write_toy_chat


def _cfg(**kw):
    return make_config(**{"iters": 1, "eval_every": 0, "rank": 4, **kw})


def test_fewer_examples_than_one_batch_is_refused_before_loading(tiny_model, tmp_path,
                                                                 tailor_home):
    folder = tmp_path / "datasets"
    folder.mkdir()
    data = write_toy_chat(folder / "small.jsonl", n=6)  # 5 to train, 1 held out
    adapters_dir().mkdir(parents=True, exist_ok=True)
    before_data, before_home = snapshot_tree(folder), snapshot_tree(tailor_home)
    events = ListReporter()
    with pytest.raises(TailorError) as err:
        train_adapter(str(tiny_model("qwen2")), data, "small", _cfg(batch_size=8),
                      report=events)
    assert str(err.value).startswith(
        "small.jsonl: 5 training examples, fewer than one batch (8); 6 examples read, "
        "1 held out for validation")
    assert err.value.hint == ("add examples (at least 3 more for training), or use a batch "
                              "size of 5 or less")
    assert "loading the model" not in [e.message for e in events.of(Progress)]
    assert snapshot_tree(folder) == before_data
    assert snapshot_tree(tailor_home) == before_home
    assert library.list_adapters() == [] and not (adapters_dir() / "small").exists()

    # One batch exactly is enough.
    info = train_adapter(str(tiny_model("qwen2")), data, "small", _cfg(batch_size=5))
    assert info.manifest["dataset"]["counts"]["train"] == 5
    assert snapshot_tree(folder) == before_data
