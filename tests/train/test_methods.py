"""Methods and options: DoRA, full, rsLoRA, targets, last-N layers, QLoRA (quantize on load and
an already quantized base), gradient checkpointing, early stopping, the memory estimate."""
from __future__ import annotations

import json
import shutil

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine import library
from engine.events import ListReporter, Log, Started, Step, TailorError
from engine.train.config import PRESETS, make_config
from engine.train.run import train_adapter


def _cfg(**kw):
    return make_config(**{"iters": 6, "eval_every": 0, "rank": 4, "batch_size": 2,
                          "learning_rate": 1e-3, **kw})


def _loads_in_mlx_lm(model_dir, info):
    """mlx-lm applies the adapter as it is and every saved tensor lands in the model."""
    model, _ = mlx_lm.load(str(model_dir), adapter_path=str(info.path))
    params = dict(tree_flatten(model.parameters()))
    saved = mx.load(str(info.weights))
    for k, v in saved.items():
        np.testing.assert_array_equal(np.array(params[k]), np.array(v))
    return json.loads((info.path / "adapter_config.json").read_text()), saved


@pytest.mark.parametrize("settings, check", [
    ({"method": "dora"}, lambda c, w: c["fine_tune_type"] == "dora"
        and any(k.endswith(".m") for k in w)),
    ({"method": "full", "num_layers": 1}, lambda c, w: c["fine_tune_type"] == "full"
        and all(k.startswith("model.layers.1.") for k in w)),
    ({"rslora": True, "rank": 4, "alpha": 8.0}, lambda c, w: c["lora_parameters"]["scale"]
        == pytest.approx(4.0)),
    ({"targets": "attention"}, lambda c, w: all(k.startswith("self_attn.")
                                                for k in c["lora_parameters"]["keys"])),
    ({"targets": "q_proj,down_proj", "num_layers": 1},
        lambda c, w: c["lora_parameters"]["keys"] == ["mlp.down_proj", "self_attn.q_proj"]
        and c["num_layers"] == 1 and all(".layers.1." in k for k in w)),
])
def test_method_and_targets_give_adapters_mlx_lm_loads(tiny_model, toy_data, settings, check):
    model_dir = tiny_model("llama3")
    info = train_adapter(str(model_dir), toy_data, "m", _cfg(**settings))
    config, weights = _loads_in_mlx_lm(model_dir, info)
    assert check(config, weights), (config, sorted(weights)[:6])


def test_unknown_target_names_the_available_modules(tiny_model, toy_data):
    with pytest.raises(TailorError, match="no linear module named wq") as e:
        train_adapter(str(tiny_model("llama3")), toy_data, "m", _cfg(targets="wq"))
    assert "self_attn.q_proj" in e.value.hint
    # the folder is only created once the settings are known to work
    assert library.list_adapters() == []


def test_quantize_base_on_load_trains_qlora(tiny_model, toy_data):
    rep = ListReporter()
    info = train_adapter(str(tiny_model("qwen2")), toy_data, "q", _cfg(quantize_base=4),
                         report=rep)
    losses = [s.train_loss for s in rep.of(Step)]
    assert losses[-1] < losses[0]
    assert info.manifest["settings"]["quantize_base"] == 4
    assert rep.of(Started)[0].info["memory"]["weights_bytes"] < \
        (tiny_model("qwen2") / "model.safetensors").stat().st_size


def test_already_quantized_base_trains_and_refuses_full(tiny_model, toy_data, tmp_path):
    from mlx_lm.utils import quantize_model, save_config, save_model

    src = tiny_model("qwen2")
    qdir = tmp_path / "qwen2-4bit"   # what an mlx-community 4-bit folder looks like
    model, config = mlx_lm.utils.load_model(src)
    model, config = quantize_model(model, config, 64, 4)
    qdir.mkdir()
    save_model(qdir, model)
    save_config(config, qdir / "config.json")
    for f in src.glob("tokenizer*"):
        shutil.copy(f, qdir)
    info = train_adapter(str(qdir), toy_data, "qlora", _cfg())
    assert info.manifest["status"] == "finished"
    with pytest.raises(TailorError, match="full fine-tuning cannot train a quantized base|"
                                          "needs a full-precision base"):
        train_adapter(str(qdir), toy_data, "qfull", _cfg(method="full"))
    with pytest.raises(TailorError, match="already quantized"):
        train_adapter(str(qdir), toy_data, "qq", _cfg(quantize_base=8))


def test_gradient_checkpointing_gives_the_same_losses(tiny_model, toy_data):
    runs = []
    for name, gc in (("plain", False), ("ckpt", True)):
        rep = ListReporter()
        train_adapter(str(tiny_model("qwen3")), toy_data, name, _cfg(grad_checkpoint=gc,
                                                                     dropout=0.0), report=rep)
        runs.append([s.train_loss for s in rep.of(Step)])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-4)


def test_early_stopping_after_patience(tiny_model, toy_data):
    # learning rate 0: the validation loss never improves, so patience 2 stops at step 4
    info = train_adapter(str(tiny_model("qwen2")), toy_data, "es",
                         _cfg(learning_rate=0.0, eval_every=2, patience=2, iters=20))
    m = info.manifest
    assert m["stopped_early"] is True and m["steps"] == 4 and m["status"] == "finished"
    assert [s for s, _ in m["loss_history"]["valid"]] == [0, 2, 4]


def test_started_event_and_memory_warning_on_a_small_machine(tiny_model, toy_data):
    rep = ListReporter()
    train_adapter(str(tiny_model("qwen2")), toy_data, "mem", _cfg(batch_size=4),
                  report=rep, machine_memory=lambda: 1_000_000)
    started = rep.of(Started)[0]
    p, mem = started.info["parameters"], started.info["memory"]
    assert 0 < p["trainable"] < p["total"]
    assert mem["total_bytes"] > mem["weights_bytes"] > 0 and mem["fits"] is False
    warning = [e for e in rep.of(Log) if e.level == "warning"][0].message
    assert "the machine has 1.00 MB" in warning and "--grad-checkpoint" in warning \
        and "--batch-size 2" in warning


def test_presets_have_plain_names_and_valid_settings():
    assert set(PRESETS) == {"quick-style", "balanced", "thorough"}
    for name in PRESETS:
        make_config(name)
    with pytest.raises(TailorError, match="unknown preset"):
        make_config("fastest")
