"""A training run loads the model's tokenizer once (issue 21: the data check's tokenizer was
loaded a second time inside load_model, ~0.1-0.3 s a run) and trains with the end-of-sequence
ids load_model gives (config.json's, replaced by generation_config.json's when it has some)."""
from __future__ import annotations

import json
import shutil

from engine.models import tokenizer as tokenizer_module
from engine.train.config import make_config
from engine.train.run import train_adapter

from .conftest import write_toy_chat


def test_a_training_run_loads_the_tokenizer_once_with_the_generation_configs_eos_ids(
        tiny_model, tmp_path, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(tiny_model("qwen2"), model)
    gen = json.loads((model / "generation_config.json").read_text())
    gen["eos_token_id"] = [2, 5]  # a second stop token that config.json does not name
    (model / "generation_config.json").write_text(json.dumps(gen))
    loaded = []
    original = tokenizer_module.load_tokenizer

    def counting(folder, **kw):
        loaded.append(original(folder, **kw))
        return loaded[-1]

    monkeypatch.setattr(tokenizer_module, "load_tokenizer", counting)
    cfg = make_config(iters=1, eval_every=1, rank=4, batch_size=2, baseline_prompts=0)
    train_adapter(str(model), write_toy_chat(tmp_path / "toy.jsonl", n=8), "once", cfg)
    assert len(loaded) == 1
    assert loaded[0].eos_token_ids == {2, 5}  # as load_model(folder) alone sets them
    assert original(model, eos_token_ids=[2, 5]).eos_token_ids == {2, 5}
