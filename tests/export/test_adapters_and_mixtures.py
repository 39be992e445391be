"""Adapter exports (fused and adapter-only), `tailor fuse`, and the K-quant mixtures checked
against llama.cpp's own quantizer on the same F16 file."""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from transformers import AutoConfig, AutoTokenizer

from engine.events import ListReporter, Progress, TailorError
from engine.export.gguf_export import export_gguf
from engine.fuse import fuse_adapter
from engine.tiny_models import cached_tiny_model

from .adapters import make_library_adapter
from .helpers import (PROMPTS, agreement, f16_copy, failed_checks, llama, llama_logits,
                      mlx_logits, rel_diff)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["llama3", "qwen2", "phi3", "gemma"])
def test_adapter_only_gguf_applied_by_llama_cpp_equals_fused_export(kind, tiny_model, tmp_path):
    base = tiny_model(kind)
    make_library_adapter("style", base, scale=10.0)
    lora = export_gguf("style", tmp_path / "style-lora.gguf", "f32", adapter_only=True)
    fused = export_gguf("style", tmp_path / "style-fused.gguf", "f32")
    base_gguf = export_gguf(base, tmp_path / "base.gguf", "f32", verify=False)
    assert lora.verification["passed"], failed_checks(lora.verification)
    assert fused.verification["passed"], failed_checks(fused.verification)
    assert lora.kind == "adapter" and lora.size_bytes < base_gguf.size_bytes

    tok = AutoTokenizer.from_pretrained(str(base))
    token_lists = [tok.encode(p) for p in PROMPTS]
    results = {}
    for name, path, adapter in (("lora", base_gguf.path, lora.path),
                                ("fused", fused.path, None), ("base", base_gguf.path, None)):
        llm = llama(path, adapter)
        try:
            results[name] = [llama_logits(llm, t) for t in token_lists]
        finally:
            llm.close()
    assert rel_diff(results["fused"], results["lora"]) < 1e-3
    same, total = agreement(results["fused"], results["lora"])
    assert same == total
    # ... and the adapter really changes the model
    assert rel_diff(results["base"], results["lora"]) > 1e-2


def test_dora_adapter_only_is_refused_and_fused_export_works(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    make_library_adapter("dora-style", base, dora=True)
    with pytest.raises(TailorError) as e:
        export_gguf("dora-style", tmp_path / "d.gguf", "f32", adapter_only=True)
    assert "DoRA" in e.value.message and "leave out --adapter-only" in e.value.hint
    assert list(tmp_path.iterdir()) == []
    fused = export_gguf("dora-style", tmp_path / "dora-fused.gguf", "f32")
    assert fused.verification["passed"], failed_checks(fused.verification)
    checks = {c["name"]: c for c in fused.verification["checks"]}
    assert checks["llama.cpp next token = MLX"]["agreement"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dora-fused.gguf",
                                                          "dora-fused.gguf.json"]


def test_fuse_writes_a_hf_folder_mlx_and_transformers_load(tiny_model, tmp_path):
    from mlx_lm import load

    base = tiny_model("llama3")
    adapter = make_library_adapter("style", base, scale=10.0)
    events = ListReporter()
    out = fuse_adapter("style", tmp_path / "fused", report=events)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "model.safetensors.index.json",
            "tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= names
    assert (out / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    assert events.of(Progress)
    tok = AutoTokenizer.from_pretrained(str(base))
    token_lists = [tok.encode(p) for p in PROMPTS]
    fused = mlx_logits(out, token_lists)
    with_adapter = mlx_logits(base, token_lists, adapter_dir=adapter)
    assert rel_diff(with_adapter, fused) < 1e-4
    model, _ = load(str(out))
    assert not any("lora" in k for k, _ in model.parameters().items())
    cfg = AutoConfig.from_pretrained(str(out))
    assert cfg.model_type == "llama"
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == tok.chat_template
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model.safetensors"}


def test_quantized_base_fuses_and_exports_dequantized(tiny_model, tmp_path):
    from mlx_lm import load
    from mlx_lm.utils import quantize_model, save_config, save_model
    import shutil

    base = tiny_model("qwen2")
    q_dir = tmp_path / "q4"
    model, config = load(str(base), return_config=True)[0], json.loads(
        (base / "config.json").read_text())
    model, config = quantize_model(model, config, 32, 4)
    save_model(q_dir, model)
    save_config(config, config_path=q_dir / "config.json")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / f, q_dir / f)
    make_library_adapter("qlora", q_dir)
    out = fuse_adapter("qlora", tmp_path / "fused")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization" not in cfg
    result = export_gguf(out, tmp_path / "qlora.gguf", "f16")
    assert result.verification["passed"], failed_checks(result.verification)
    # the quantized folder itself exports (dequantized first), and so does the QLoRA adapter
    direct = export_gguf(q_dir, tmp_path / "q4-base.gguf", "f32")
    assert direct.verification["passed"], failed_checks(direct.verification)
    lora = export_gguf("qlora", tmp_path / "qlora-lora.gguf", "f32", adapter_only=True)
    assert lora.verification["passed"], failed_checks(lora.verification)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("kind,quant", [("llama3", "q4_k_m"), ("phi3", "q4_k_m"),
                                        ("qwen2", "q5_k_m"), ("gemma3", "q6_k"),
                                        ("llama2", "q8_0"), ("qwen3", "q4_0")])
def test_quant_mixture_is_byte_identical_to_llama_cpp_quantize(kind, quant, tmp_path):
    """Same F16 source: Tailor's file vs llama_model_quantize's, tensor by tensor (type and
    bytes). Rows of 256 (hidden 256, intermediate 512) so K-quants apply; the 64-wide tiny
    models exercise the fallbacks in the tests above."""
    base = cached_tiny_model(kind, hidden_size=256, intermediate_size=512)
    m16 = f16_copy(base, tmp_path / "m16")
    export_gguf(m16, tmp_path / "f16.gguf", "f16", verify=False)
    ours = export_gguf(m16, tmp_path / "ours.gguf", quant, verify=False)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "q8_0": 7, "q4_0": 2}[quant]
    assert llama_cpp.llama_model_quantize(str(tmp_path / "f16.gguf").encode(),
                                          str(tmp_path / "ref.gguf").encode(),
                                          ctypes.byref(params)) == 0
    a = {t.name: t for t in gguf.GGUFReader(str(ours.path)).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "ref.gguf")).tensors}
    assert set(a) == set(b)
    kquant_types = set()
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert np.array_equal(np.asarray(a[name].data).view(np.uint8),
                              np.asarray(b[name].data).view(np.uint8)), name
        kquant_types.add(a[name].tensor_type.name)
    if quant.endswith("_k_m"):
        assert {"Q6_K"} <= kquant_types


def test_cli_export_streams_events_and_prints_the_verification(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    out = tmp_path / "cli.gguf"
    proc = subprocess.run([sys.executable, "-m", "engine", "export", "--model", str(base),
                           "--quant", "q8_0", "--out", str(out), "--events", "-", "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "progress" in kinds
    assert events[-1]["result"]["verification"]["passed"]
    assert "verification: PASSED" in proc.stderr
    assert "llama.cpp next token = MLX" in proc.stderr


def test_cli_fuse_then_export_the_fused_folder(tiny_model, tmp_path, tailor_home):
    base = tiny_model("gemma2")
    make_library_adapter("style", base, scale=10.0)
    env = {**__import__("os").environ, "TAILOR_HOME": str(tailor_home)}
    fused = tmp_path / "fused"
    proc = subprocess.run([sys.executable, "-m", "engine", "fuse", "--adapter", "style",
                           "--out", str(fused), "--events", "-", "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["event"] == "finished" and events[-1]["result"]["path"] == str(fused)
    proc = subprocess.run([sys.executable, "-m", "engine", "export", "--model", str(fused),
                           "--quant", "f32", "--out", str(tmp_path / "fused.gguf")],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "verification: PASSED" in proc.stdout
