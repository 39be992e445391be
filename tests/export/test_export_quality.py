"""Issue 21, measured quality per type: after an export, the verification also measures in
llama.cpp the mean KL divergence of the file's next-token distribution from the fused model
in MLX (float32 weights) and the perplexity on the adapter's held-out split, as training
rendered it (engine/export/quality.py); the figures are kept in the export's record and the
adapter's exports list, and `tailor library show` lists them."""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from engine.adapter_exports import listed_export_records
from engine.cli import main as cli_main
from engine.events import decode_event
from engine.export.gguf_export import export_gguf, record_path
from engine.export.quality import position_figures, select_examples, summarize
from engine.library import get_adapter
from engine.results import ExportQuality
from tests.evaluate.test_parity import _trained


def _direct_kl(a: np.ndarray, b: np.ndarray) -> float:
    """KL(softmax(a) || softmax(b)) of one position, written out."""
    p = np.exp(a.astype(np.float64) - a.max())
    p /= p.sum()
    q = np.exp(b.astype(np.float64) - b.max())
    q /= q.sum()
    return float(np.sum(p * np.log(p / q)))


def _direct_nll(logits: np.ndarray, target: int) -> float:
    x = logits.astype(np.float64)
    return float(math.log(sum(math.exp(v - x.max()) for v in x)) + x.max() - x[target])


def test_kl_and_perplexity_equal_a_direct_computation():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (150, 97)).astype(np.float32)  # more rows than one chunk (64)
    got = (ref + rng.normal(0, 0.3, ref.shape)).astype(np.float32)
    targets = rng.integers(0, 97, 150)
    figures = summarize(position_figures(ref, got, targets))
    kl = [_direct_kl(a, b) for a, b in zip(ref, got)]
    assert figures["kl_mean"] == pytest.approx(np.mean(kl), rel=1e-9)
    assert figures["kl_max"] == pytest.approx(max(kl), rel=1e-9)
    assert figures["kl_p99"] == pytest.approx(np.percentile(kl, 99), rel=1e-9)
    ppl = math.exp(np.mean([_direct_nll(g, t) for g, t in zip(got, targets)]))
    assert figures["perplexity"] == pytest.approx(ppl, rel=1e-9)
    ref_ppl = math.exp(np.mean([_direct_nll(r, t) for r, t in zip(ref, targets)]))
    assert figures["reference_perplexity"] == pytest.approx(ref_ppl, rel=1e-9)
    assert figures["same_top"] == np.mean(ref.argmax(-1) == got.argmax(-1))
    assert figures["tokens"] == 150
    same = summarize(position_figures(ref, ref, targets))  # a file equal to the reference
    assert abs(same["kl_mean"]) < 1e-12 and same["same_top"] == 1.0


def test_examples_are_taken_in_order_within_the_token_budget():
    examples = [([1, 2, 3, 4], [0, 0, 1, 1]),   # scores positions 1, 2 (tokens 3, 4)
                ([5, 6, 7], [0, 0, 0]),         # nothing trained: skipped
                ([8, 9, 10, 11, 12], [0, 1, 1, 1, 1])]
    assert select_examples(examples, 100) == ([[1, 2, 3, 4], [8, 9, 10, 11, 12]],
                                              [[1, 2], [0, 1, 2, 3]])
    # the budget cuts the last example after its last scored position
    assert select_examples(examples, 4) == ([[1, 2, 3, 4], [8, 9, 10]], [[1, 2], [0, 1]])
    # an example is cut at max_context tokens
    assert select_examples(examples[2:], 100, max_context=3) == ([[8, 9, 10]], [[0, 1]])


def _reference_figures(info, gguf, fused_dir) -> dict:
    """The held-out split from the training pipeline, MLX float32 logits of the fused model
    and llama.cpp's logits of the file, compared position by position with _direct_kl."""
    import mlx.core as mx
    from llama_cpp import GGML_TYPE_F32, Llama
    from mlx.utils import tree_map
    from mlx_lm import load

    from engine.data import DataConfig, prepare_dataset
    from engine.models.tokenizer import load_hf_tokenizer

    settings = DataConfig(**{k: v for k, v in info.manifest["data_settings"].items()
                             if k in DataConfig.__dataclass_fields__})
    valid = prepare_dataset(info.manifest["dataset"]["path"],
                            load_hf_tokenizer(info.manifest["base_model"]["path"]),
                            settings).valid
    model, _ = load(str(fused_dir))
    model.update(tree_map(lambda v: v.astype(mx.float32), model.parameters()))
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        llm = Llama(str(gguf), n_ctx=512, logits_all=True, verbose=False,
                    type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    kl, nll = [], []
    for ex in valid:
        ref = np.array(model(mx.array([ex.tokens]))[0].astype(mx.float32))
        llm.reset()
        llm.eval(ex.tokens)
        got = np.array(llm.scores[:len(ex.tokens)], dtype=np.float32)
        for i in range(len(ex.tokens) - 1):
            if ex.loss_mask[i + 1]:
                kl.append(_direct_kl(ref[i], got[i]))
                nll.append(_direct_nll(got[i], ex.tokens[i + 1]))
    llm.close()
    return {"kl_mean": float(np.mean(kl)), "perplexity": math.exp(np.mean(nll)),
            "tokens": len(kl), "examples": len(valid)}


def test_an_adapter_export_records_kl_and_perplexity_on_its_held_out_split(
        tiny_model, tmp_path, capsys):
    from engine.fuse import fuse_adapter

    info = _trained(tiny_model("llama3"), tmp_path, "q")
    weights = info.weights.read_bytes()
    results = {q: export_gguf("q", tmp_path / f"q-{q}.gguf", q) for q in ("f32", "q8_0", "q4_0")}
    assert info.weights.read_bytes() == weights
    fused = fuse_adapter("q", tmp_path / "fused")
    for quant, r in results.items():
        assert r.verified, r.verification
        q = ExportQuality.of(r)
        assert q.measured and q.note == "", q
        assert q.text.startswith(f"validation split of {info.manifest['dataset']['path']}")
        assert q.reference == "MLX, the fused model with float32 weights"
        # the figure says it includes llama.cpp's CPU rounding of activations (not Metal's)
        assert q.runtime.startswith("llama.cpp with every layer on the CPU")
        assert "rounds its input to 8 bits" in q.runtime
        # the record beside the file and the adapter's exports list say the same
        record = json.loads(record_path(r.path).read_text())
        assert ExportQuality.of(record) == q
        want = _reference_figures(info, r.path, fused)
        assert (q.tokens, q.examples) == (want["tokens"], want["examples"])
        assert q.kl_mean == pytest.approx(want["kl_mean"], rel=1e-4, abs=1e-9), quant
        assert q.perplexity == pytest.approx(want["perplexity"], rel=1e-6), quant
    kl = {quant: ExportQuality.of(r).kl_mean for quant, r in results.items()}
    assert kl["f32"] < 1e-8 < kl["q8_0"] < kl["q4_0"]  # the floor, then coarser types

    listed = {e.quant: e for e in listed_export_records(info.path)}
    assert sorted(listed) == ["f32", "q4_0", "q8_0"]
    for quant, r in results.items():
        assert listed[quant].quality == ExportQuality.of(r)
        assert listed[quant].seconds == r.seconds and listed[quant].size == r.size_bytes
    capsys.readouterr()
    assert cli_main(["library", "show", "q"]) == 0
    shown = capsys.readouterr().out
    q4 = listed["q4_0"].quality
    assert "q4_0" in shown and f"KL {q4.kl_mean:.3g}  ppl {q4.perplexity:.4g}" in shown


def test_a_model_folder_is_measured_on_the_verification_prompts_and_says_so(tiny_model,
                                                                             tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert cli_main(["export", "--model", str(tiny_model("qwen2")), "--quant", "q8_0",
                     "--out", str(out)]) == 0
    q = ExportQuality.of(json.loads(record_path(out).read_text()))
    printed = capsys.readouterr().out  # `tailor export` prints the figures after the checks
    assert f"  quality: mean KL divergence {q.kl_mean:.3g} nats/token" in printed
    assert f"perplexity {q.perplexity:.4g}" in printed
    assert q.measured and q.text == "the verification prompts (every token)"
    assert q.note == "a model folder has no held-out split"
    assert q.tokens == q.context_tokens - q.examples and q.examples == 3
    assert 0 < q.kl_mean < 0.01 and q.perplexity > 1


def test_a_dataset_changed_since_training_is_not_measured_as_held_out(tiny_model, tmp_path):
    info = _trained(tiny_model("qwen2"), tmp_path, "c")
    data = tmp_path / "toy.jsonl"
    data.write_text(data.read_text() + json.dumps({"messages": [
        {"role": "user", "content": "new"}, {"role": "assistant", "content": "line"}]}) + "\n")
    r = export_gguf("c", tmp_path / "c.gguf", "q8_0")
    q = ExportQuality.of(r)
    assert r.verified and q.measured
    assert q.text == "the verification prompts (every token)"
    assert q.note.startswith("its validation split could not be re-derived (") and \
        f"{data} changed since adapter 'c' was trained on it" in q.note


def test_no_quality_without_llama_cpp_verification_or_for_an_adapter_file(tiny_model,
                                                                         tmp_path):
    from tests.export.adapters import make_library_adapter

    r = export_gguf(tiny_model("qwen2"), tmp_path / "n.gguf", "q8_0", verify=False)
    assert ExportQuality.of(r) is None
    make_library_adapter("a", tiny_model("llama3"))
    r = export_gguf("a", tmp_path / "a.gguf", "f16", adapter_only=True)
    assert r.verified and ExportQuality.of(r) is None
    (entry,) = listed_export_records(get_adapter("a").path)
    assert entry.kind == "adapter" and entry.quality is None


def test_the_exports_list_says_which_files_were_quantized_with_an_importance_matrix(
        tiny_model, tmp_path, capsys):
    from tests.export.adapters import make_library_adapter

    folder = make_library_adapter("m", tiny_model("llama3"))
    export_gguf("m", tmp_path / "plain.gguf", "q2_k", verify=False)
    matrix = {"blk.0.attn_q.weight": np.linspace(0.5, 2.0, 64, dtype=np.float32)}
    export_gguf("m", tmp_path / "weighted.gguf", "q2_k", verify=False, imatrix=matrix)
    listed = {Path(e.path).name: e for e in listed_export_records(folder)}
    assert (listed["plain.gguf"].imatrix, listed["weighted.gguf"].imatrix) == ("", "given")
    capsys.readouterr()
    assert cli_main(["library", "show", "m"]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if ".gguf" in line]
    assert [line.replace("exports", "").split()[0] for line in shown] == \
        ["q2_k", "q2_k+imatrix"]


def test_list_types_gives_every_type_with_the_expected_size_of_its_file(tiny_model, tmp_path,
                                                                        capsys):
    from engine.export.quant_types import QUANT_TYPES

    model = tiny_model("llama3")
    events = tmp_path / "events.jsonl"
    assert cli_main(["export", "--list-types", "--model", str(model),
                     "--events", str(events)]) == 0
    out = capsys.readouterr().out
    result = [decode_event(line) for line in events.read_text().splitlines()
              if '"finished"' in line][-1].result
    assert [t.name for t in result.types] == [q.name for q in QUANT_TYPES]
    for q in QUANT_TYPES:  # the terminal table: a line per type with its bits and use
        assert any(line.split()[:2] == [q.name, f"{q.bits_per_weight:.2f}"] and q.use in line
                   for line in out.splitlines()), q.name
    sizes = {t.name: t.expected_bytes for t in result.types}
    for quant in ("q8_0", "q4_k_m", "f16"):
        written = export_gguf(model, tmp_path / f"s-{quant}.gguf", quant, verify=False)
        assert abs(sizes[quant] - written.size_bytes) <= 0.05 * written.size_bytes, quant
    # without a model: the table alone, no sizes; nothing is written either way
    assert cli_main(["export", "--list-types", "--events", str(events)]) == 0
    assert all(t.expected_bytes is None for t in [decode_event(line) for line in
               events.read_text().splitlines() if '"finished"' in line][-1].result.types)
