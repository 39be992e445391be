"""Issue 20: adapters trained on a 4-bit base (QLoRA) merge like any others; `--fuse`
dequantizes the base as `tailor fuse` does, and equals fusing the merged adapter."""
from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from engine.fuse import fuse_adapter
from engine.merge import MergeConfig, merge_adapters

from .helpers import MLP, logits, make_lora, max_rel


def test_qlora_adapters_merge_and_fuse_dequantized(tiny_model, tmp_path):
    import mlx_lm
    from mlx_lm.utils import quantize_model, save_config, save_model

    base = tiny_model("llama3")
    q_dir = tmp_path / "q4"
    model = mlx_lm.load(str(base))[0]
    model, config = quantize_model(model, json.loads((base / "config.json").read_text()), 32, 4)
    save_model(q_dir, model)
    save_config(config, config_path=q_dir / "config.json")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / f, q_dir / f)
    make_lora("qa", q_dir, seed=1)
    make_lora("qb", q_dir, seed=2, rank=8, keys=MLP)
    cfg = MergeConfig(method="concat", weights=[0.5, 1.5])
    adapter = merge_adapters(["qa", "qb"], cfg, "qmix")
    fused_by_merge = merge_adapters(["qa", "qb"], cfg, "", tmp_path / "merged-fused")
    assert fused_by_merge.exact and adapter.exact
    assert "quantization" not in json.loads((tmp_path / "merged-fused/config.json").read_text())
    fused_adapter = fuse_adapter("qmix", tmp_path / "adapter-fused")
    ours = dict(tree_flatten(mlx_lm.load(str(tmp_path / "merged-fused"))[0].parameters()))
    theirs = dict(tree_flatten(mlx_lm.load(str(fused_adapter))[0].parameters()))
    assert ours.keys() == theirs.keys()
    for k in ours:
        a, b = np.array(ours[k].astype(mx.float32)), np.array(theirs[k].astype(mx.float32))
        assert np.max(np.abs(a - b)) <= 1e-5 * max(np.max(np.abs(b)), 1e-6), k
    # and the merged adapter on the quantized base gives the fused model's outputs
    assert max_rel(logits(q_dir, adapter.path), logits(tmp_path / "merged-fused")) < 1e-4
