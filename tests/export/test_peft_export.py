"""`tailor export --adapter NAME --format peft --out DIR` (issue 23): PEFT's key names, layouts
and LoraConfig; refusals; the user's adapter untouched; and the oracle: PEFT + CPU torch load the
folder on the fixture base and give MLX's next-token logits (within 1e-4 relative) for LoRA,
rsLoRA and DoRA. The oracle needs a Python with torch and peft, named by TAILOR_PEFT_PYTHON
(scripts/make_peft_venv.sh makes one): kept out of the main venv, where torch would change
what transformers imports in every engine process, and out of CI (about 1.2 GB and minutes to
install, for one test)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main as tailor
from engine.library import adapter_path, read_manifest, write_manifest
from tests.conftest import REPO, snapshot_tree
from tests.export.adapters import make_library_adapter

pytestmark = pytest.mark.slow

IDS = [5, 17, 42, 99, 123, 7, 64, 250, 31, 8, 77, 150]


def library_adapter(name, base, *, method="lora", rank=4, alpha=8.0, rslora=False, seed=0,
                    std=0.05):
    """A library adapter whose manifest records the run's alpha/rslora (the scale follows)."""
    scale = alpha / (rank ** 0.5 if rslora else rank)
    folder = make_library_adapter(name, base, rank=rank, scale=scale, dora=method == "dora",
                                  seed=seed, std=std)
    manifest = read_manifest(folder)
    manifest["settings"] = {"method": method, "rank": rank, "alpha": alpha, "rslora": rslora,
                            "dropout": 0.0}
    write_manifest(folder, manifest)
    return folder


def export(name, out, *extra) -> int:
    return tailor(["export", "--adapter", name, "--format", "peft", "--out", str(out), *extra])


def peft_file(out: Path) -> dict:
    import mlx.core as mx

    return dict(mx.load(str(out / "adapter_model.safetensors")))


def test_lora_keys_are_peft_names_transposed_and_the_config_says_rank_and_alpha(
        tiny_model, tmp_path, capsys):
    import mlx.core as mx

    base = tiny_model("llama3")
    folder = library_adapter("style", base)
    before = snapshot_tree(folder)
    out = tmp_path / "peft"
    assert export("style", out) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json",
                                                     "adapter_model.safetensors"]
    mlx_weights = dict(mx.load(str(folder / "adapters.safetensors")))
    peft = peft_file(out)
    assert len(peft) == len(mlx_weights)
    a = mlx_weights["model.layers.1.self_attn.q_proj.lora_a"]
    b = mlx_weights["model.layers.1.self_attn.q_proj.lora_b"]
    assert np.array_equal(np.array(peft["base_model.model.model.layers.1.self_attn.q_proj"
                                        ".lora_A.weight"]), np.array(a).T)
    assert np.array_equal(np.array(peft["base_model.model.model.layers.1.self_attn.q_proj"
                                        ".lora_B.weight"]), np.array(b).T)
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["task_type"], config["r"], config["lora_alpha"],
            config["use_rslora"], config["use_dora"]) == ("LORA", "CAUSAL_LM", 4, 8.0, False,
                                                          False)
    assert config["target_modules"] == ["down_proj", "k_proj", "q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(base)
    assert snapshot_tree(folder) == before  # the library adapter is never modified
    assert [p.name for p in tmp_path.iterdir()] == ["peft", "tailor-home"]  # no temporaries


def test_rslora_keeps_alpha_and_sets_use_rslora(tiny_model, tmp_path):
    library_adapter("rs", tiny_model("llama3"), rank=4, alpha=4.0, rslora=True)
    assert export("rs", tmp_path / "out") == 0
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    # PEFT: scaling = alpha / sqrt(r) = 4 / 2, mlx-lm's scale 2.0
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (4, 4.0, True)


def test_dora_magnitudes_are_lora_magnitude_vectors(tiny_model, tmp_path):
    import mlx.core as mx

    folder = library_adapter("dora", tiny_model("llama3"), method="dora")
    assert export("dora", tmp_path / "out") == 0
    m = dict(mx.load(str(folder / "adapters.safetensors")))["model.layers.0.mlp.down_proj.m"]
    peft = peft_file(tmp_path / "out")
    assert np.array_equal(np.array(peft["base_model.model.model.layers.0.mlp.down_proj"
                                        ".lora_magnitude_vector"]), np.array(m))
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["use_dora"]


def test_an_adapter_on_some_blocks_names_full_module_paths(tiny_model, tmp_path):
    import mlx.core as mx

    folder = library_adapter("last", tiny_model("llama3"))
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    kept = {k: v for k, v in weights.items() if k.startswith("model.layers.1.")}
    mx.save_safetensors(str(folder / "adapters.safetensors"), kept)
    assert export("last", tmp_path / "out") == 0
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted({k.rsplit(".", 1)[0] for k in kept})


def test_a_folder_with_files_is_refused_and_left_alone_an_empty_one_is_used(
        tiny_model, tmp_path, capsys):
    library_adapter("style", tiny_model("llama3"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    assert export("style", full) == 1
    assert "already exists and is not empty; it was left untouched" in capsys.readouterr().err
    assert [p.name for p in full.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export("style", empty) == 0
    assert (empty / "adapter_model.safetensors").is_file()


def test_a_full_fine_tune_and_a_model_folder_are_refused_with_the_reason(
        tiny_model, tmp_path, capsys):
    folder = library_adapter("full", tiny_model("llama3"))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config,
                                                            "fine_tune_type": "full"}))
    assert export("full", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "full fine-tune" in err and "no PEFT adapter to write" in err
    assert "tailor fuse --adapter full" in err
    assert not (tmp_path / "out").exists()
    assert tailor(["export", "--model", str(tiny_model("llama3")), "--format", "peft",
                   "--out", str(tmp_path / "out")]) == 1
    assert "--format peft writes a library adapter" in capsys.readouterr().err


def test_a_mixture_of_experts_adapter_is_refused(tiny_model, tmp_path, capsys):
    import mlx.core as mx

    folder = library_adapter("moe", tiny_model("llama3"))
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    weights["model.layers.0.mlp.switch_mlp.up_proj.lora_a"] = mx.zeros((4, 64, 4))
    weights["model.layers.0.mlp.switch_mlp.up_proj.lora_b"] = mx.zeros((4, 4, 64))
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    assert export("moe", tmp_path / "out") == 1
    assert "mixture-of-experts" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The oracle: PEFT itself, on CPU torch

def peft_python() -> str | None:
    candidate = os.environ.get("TAILOR_PEFT_PYTHON")
    return candidate if candidate and Path(candidate).is_file() else None


CASES = [("llama3", "lora"), ("llama3", "rslora"), ("llama3", "dora"), ("qwen2", "lora"),
         ("qwen2", "dora"), ("phi3", "rslora"), ("gemma", "dora")]


def mlx_logits(base: Path, adapter: Path | None) -> np.ndarray:
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(base), adapter_path=str(adapter) if adapter else None)
    return np.array(model(mx.array([IDS]))[0, -1].astype(mx.float32), dtype=np.float64)


@pytest.mark.skipif(peft_python() is None, reason="needs a Python with torch and peft named "
                    "by TAILOR_PEFT_PYTHON (scripts/make_peft_venv.sh)")
def test_peft_gives_mlx_logits_for_lora_rslora_and_dora(tiny_model, tmp_path):
    cases, expected = [], {}
    for i, (kind, method) in enumerate(CASES):
        name = f"{kind}-{method}"
        base = tiny_model(kind)
        folder = library_adapter(name, base, method="dora" if method == "dora" else "lora",
                                 rank=8 if method == "rslora" else 4,
                                 alpha=6.0 if method == "rslora" else 8.0,
                                 rslora=method == "rslora", seed=i, std=0.2)
        assert export(name, tmp_path / name) == 0
        cases.append({"name": name, "base": str(base), "peft": str(tmp_path / name),
                      "ids": IDS})
        expected[name] = (mlx_logits(base, folder), mlx_logits(base, None))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    done = subprocess.run([peft_python(), str(REPO / "tests/export/peft_oracle.py"),
                           str(tmp_path / "cases.json"), str(tmp_path / "torch.npz")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    torch_logits = np.load(tmp_path / "torch.npz")
    figures = {}
    for name, (tuned, base_logits) in expected.items():
        got = torch_logits[name]
        scale = np.abs(got).max()
        error = np.abs(got - tuned).max() / scale
        moved = np.abs(tuned - base_logits).max() / scale  # what the adapter changes
        figures[name] = (error, moved)
        assert error <= 1e-4, f"{name}: PEFT's logits differ from MLX's by {error:.2e} relative"
        assert moved > 100 * 1e-4, f"{name}: the adapter hardly moves the logits ({moved:.1e})"
        assert np.abs(torch_logits[name + ":base"] - base_logits).max() / scale <= 1e-4
    print("PEFT vs MLX, max |diff| / max |logit| (adapter's own change):", ", ".join(
        f"{n} {e:.1e} ({m:.2f})" for n, (e, m) in figures.items()), file=sys.stderr)
