"""Shipped-file parity (engine/evaluate/parity.py, issue 15): the fused model and the F16 GGUF
of every fixture architecture answer the held-out prompts exactly as MLX + adapter does; a
"fused" model that is really the base (a fuse that dropped the adapter, mlx-lm#1172) and a
GGUF of the base are reported as "the adapter was lost"."""
from __future__ import annotations

import shutil

import pytest

from engine import paths
from engine.capabilities import exports_gguf
from engine.events import Job
from engine.evaluate.parity import NEAR_TIE, exported_ggufs, shipped_parity
from engine.export.gguf_export import export_gguf
from engine.models.load import read_config
from engine.tiny_models import ALL_KINDS
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree
from tests.train.conftest import write_toy_chat

PROMPTS = 4
MAX_TOKENS = 8  # "mountain river fish" and its end: 4 to 7 tokens on the fixtures


def _trained(model_dir, tmp_path, name="p", **settings):
    """An adapter that answers every prompt with the toy answer (unlike the random base)."""
    data = write_toy_chat(tmp_path / "toy.jsonl")
    return train_adapter(str(model_dir), data, name, make_config(**{
        "iters": 20, "eval_every": 0, "rank": 8, "batch_size": 4, "learning_rate": 3e-3,
        "baseline_prompts": PROMPTS, **settings}))


# The Gemma 2 fixture's peaked embeddings (x sqrt(hidden)) saturate its final logit softcap, so
# an adapter cannot move its answers in 20 steps (loss flat at 5.9); the demo's embedding scale
# lets it learn (loss 0.8).
SIZES = {"gemma2": {"embed_std": 0.1}}


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fused_model_and_f16_gguf_answer_like_mlx_with_the_adapter(kind, tiny_model, tmp_path,
                                                                   tailor_home):
    model_dir = tiny_model(kind, **SIZES.get(kind, {}))
    if not exports_gguf(read_config(model_dir)["model_type"]):
        pytest.skip(f"{kind} has no GGUF export")
    info = _trained(model_dir, tmp_path)
    gguf = paths.exports_dir() / info.name / f"{info.name}-f16.gguf"
    gguf.parent.mkdir(parents=True)
    export_gguf(info.name, gguf, "f16", verify=False)
    before = snapshot_tree(model_dir), snapshot_tree(tailor_home)  # library, exports included

    r = shipped_parity(info.name, Job("parity"), prompts=PROMPTS, max_tokens=MAX_TOKENS)

    assert [t.kind for t in r.targets] == ["fused", "gguf"]  # the export was found by itself
    assert r.targets[1].path == str(gguf) and r.targets[1].quant == "f16"
    assert r.prompts == PROMPTS
    assert r.adapter_differs_from_base > 0  # else "lost" could not be told apart
    for t in r.targets:
        assert t.identical == t.total == PROMPTS, r.format_text()
        assert t.share_identical == 1.0 and not t.adapter_lost
    assert r.passed and r.verdict.startswith("shipped-file parity: PASSED"), r.verdict
    assert "fused model (engine/fuse.py) 4/4" in r.verdict and f"{gguf.name} 4/4" in r.verdict
    # the prompts are the run record's baseline prompts, as trained
    recorded = info.manifest["baseline"]["prompts"]
    assert [a.source for a in r.targets[0].answers] == [p["source"] for p in recorded]
    assert (snapshot_tree(model_dir), snapshot_tree(tailor_home)) == before


@pytest.mark.parametrize("settings", [{"method": "dora"}, {"method": "full", "num_layers": 1,
                                                             "learning_rate": 1e-3}])
def test_dora_and_full_fine_tunes_fuse_and_export_with_parity(settings, tiny_model, tmp_path):
    info = _trained(tiny_model("llama3"), tmp_path, **settings)
    gguf = tmp_path / "out.gguf"
    export_gguf(info.name, gguf, "f16", verify=False)
    r = shipped_parity(info.name, Job("parity"), ggufs=[gguf], prompts=PROMPTS,
                       max_tokens=MAX_TOKENS)
    assert r.adapter_differs_from_base > 0
    assert r.passed and all(t.identical == PROMPTS for t in r.targets), r.format_text()


def test_a_fuse_that_dropped_the_adapter_and_a_gguf_of_the_base_are_called_out(
        tiny_model, tmp_path):
    model_dir = tiny_model("qwen2")
    _trained(model_dir, tmp_path, "lost")
    broken_fuse = shutil.copytree(model_dir, tmp_path / "fused-without-adapter")
    base_gguf = tmp_path / "base-f16.gguf"
    export_gguf(model_dir, base_gguf, "f16", verify=False)

    r = shipped_parity("lost", Job("parity"), fused=broken_fuse, ggufs=[base_gguf],
                       prompts=PROMPTS, max_tokens=MAX_TOKENS)

    fused, gguf = r.targets
    assert fused.adapter_lost and gguf.adapter_lost
    assert fused.equals_base == PROMPTS and fused.identical < PROMPTS
    assert not r.passed
    assert r.verdict.startswith(f"shipped-file parity: FAILED -- the adapter was lost in "
                                f"fused model {broken_fuse}, base-f16.gguf"), r.verdict
    text = r.format_text()
    assert f"fused model {broken_fuse}: {fused.identical} of {PROMPTS} answers identical to " \
           f"MLX + adapter -- the adapter was lost" in text
    # each differing answer names where it diverges and MLX's margin there
    differing = [a for a in fused.answers if not a.identical]
    assert differing and all(a.diverges_at is not None and a.mlx_gap is not None
                             for a in differing)
    assert all(a.near_tie == (a.mlx_gap <= NEAR_TIE) for a in differing)
    assert f"diverges at token {differing[0].diverges_at}" in text


def test_exports_of_other_adapters_and_adapter_only_files_are_not_compared(tmp_path):
    import json
    import os
    import time

    from engine.library import AdapterInfo

    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapters.safetensors").write_bytes(b"x")
    info = AdapterInfo("a", folder, {})
    exports = paths.exports_dir()
    for name, source, kind in (("mine.gguf", "a", "model"), ("other.gguf", "b", "model"),
                               ("lora.gguf", "a", "adapter"), ("old.gguf", "a", "model")):
        (exports / name).write_bytes(b"GGUF")
        (exports / f"{name}.json").write_text(json.dumps({"source": source, "kind": kind}))
    past = time.time() - 3600
    os.utime(exports / "old.gguf", (past, past))
    found, notes = exported_ggufs(info)
    assert found == [exports / "mine.gguf"]
    assert any(n.startswith("lora.gguf: an adapter-only GGUF") for n in notes)
    assert any(n.startswith("old.gguf: older than the adapter's weights") for n in notes)


def test_tailor_eval_with_parity_flags_names_the_lost_adapter(tiny_model, tmp_path, capsys):
    from engine.cli import main as cli_main
    from engine.events import decode_event
    from engine.results import EvalReport

    model_dir = tiny_model("qwen2")
    _trained(model_dir, tmp_path, "cli")
    broken_fuse = shutil.copytree(model_dir, tmp_path / "not-fused")
    events = tmp_path / "events.jsonl"
    rc = cli_main(["eval", "--adapter", "cli", "--no-probe", "--limit", "2",
                   "--fused", str(broken_fuse), "--events", str(events)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    report = [decode_event(line) for line in events.read_text().splitlines()
              if '"finished"' in line][0].result
    assert isinstance(report, EvalReport) and report.parity is not None
    assert report.parity.targets[0].adapter_lost
    assert f"the adapter was lost in fused model {broken_fuse}" in printed
    # a missing file is refused before any work, naming it
    rc = cli_main(["eval", "--adapter", "cli", "--gguf", str(tmp_path / "none.gguf")])
    printed = capsys.readouterr()
    assert rc == 1 and f"{tmp_path / 'none.gguf'}: no such GGUF file" in printed.err + printed.out


def test_each_divergence_names_its_token_and_whether_mlx_had_a_near_tie():
    """The comparison itself, on hand-made answers: a flip at a near-tie is explained by
    rounding, one at a clear winner fails the check."""
    from engine.evaluate.greedy import Greedy
    from engine.evaluate.parity import _compare, _Prompt, _Reference, _verdict
    from engine.results import ParityResult

    class Letters:  # token i is the letter chr(97 + i)
        def decode(self, ids):
            return "".join(chr(97 + i) for i in ids)

    prompts = [_Prompt("d.jsonl:1", [1], "one"), _Prompt("d.jsonl:2", [2], "two")]
    tuned = [Greedy([0, 1, 2], True, [0.9, 0.9, 0.01, 0.9]),   # "abc", a near-tie at token 2
             Greedy([3, 4], True, [0.9, 0.5, 0.9])]            # "de", a clear winner at 1
    base = [Greedy([7], True, [0.9, 0.9]), Greedy([7], True, [0.9, 0.9])]
    ref = _Reference(prompts, base, tuned, Letters())
    target = _compare("x.gguf", "gguf", "x.gguf", "q4_k_m",
                      [Greedy([0, 1, 5], True), Greedy([3, 6], True)], ref)
    first, second = target.answers
    assert (first.diverges_at, first.expected_token, first.answer_token) == (2, "c", "f")
    assert first.near_tie is True and first.mlx_gap == 0.01
    assert (second.diverges_at, second.near_tie, second.mlx_gap) == (1, False, 0.5)
    assert target.identical == 0 and not target.adapter_lost
    r = ParityResult(prompts=2, targets=[target])
    _verdict(r)  # a quantized file: its rounding changed a clear winner
    assert not r.passed
    assert r.verdict.startswith("shipped-file parity: DIFFERS -- x.gguf: the type's rounding "
                                "changes answers where MLX had no near-tie")
    target.quant = "f16"  # the same at F16 is not rounding
    r = ParityResult(prompts=2, targets=[target])
    _verdict(r)
    assert r.verdict.startswith("shipped-file parity: FAILED -- answers diverge where MLX had "
                                "no near-tie in x.gguf (a full-precision file should compute")
    # a file that stops where MLX goes on diverges at the stop, and the stop position counts
    early = _compare("y", "gguf", "y", "", [Greedy([0, 1], True), Greedy([3, 4], True)], ref)
    assert early.answers[0].diverges_at == 2 and early.answers[0].answer_token == ""
    assert early.answers[1].identical


def test_a_stop_during_parity_ends_it_and_leaves_no_temporary_fuse(tiny_model, tmp_path,
                                                                    monkeypatch):
    from engine.events import Cancelled, CancelToken, Progress

    _trained(tiny_model("qwen2"), tmp_path, "stop")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    cancel = CancelToken()

    def stop_at_the_fused_answers(event):
        if isinstance(event, Progress) and "fused model's answers" in event.message:
            cancel.cancel()

    with pytest.raises(Cancelled):
        shipped_parity("stop", Job("parity", stop_at_the_fused_answers, cancel),
                       prompts=PROMPTS, max_tokens=MAX_TOKENS)
    assert list(scratch.iterdir()) == []  # the temporary fused folder is gone


def test_a_run_with_few_held_out_prompts_is_topped_up_with_general_ones(tiny_model, tmp_path):
    _trained(tiny_model("qwen2"), tmp_path, "few", baseline_prompts=2)
    r = shipped_parity("few", Job("parity"), ggufs=[], prompts=PROMPTS, max_tokens=MAX_TOKENS)
    sources = [a.source for a in r.targets[0].answers]
    assert r.prompts == PROMPTS and r.general_prompts == 2
    assert sources[2:] == ["general_probe.jsonl:1", "general_probe.jsonl:2"]
    assert "on 4 prompts (2 held-out, 2 general)" in r.verdict
    assert "2 of the 4 prompts are the forgetting probe's general prompts" in r.notes[0]
    assert r.targets[0].answers[2].prompt == "What is 7 plus 5?"


def test_parity_and_probe_name_a_missing_base_model(tiny_model, tmp_path):
    from engine.events import TailorError
    from engine.evaluate.probe import forgetting_probe

    base = shutil.copytree(tiny_model("qwen2"), tmp_path / "base")
    _trained(base, tmp_path, "orphan", iters=2, baseline_prompts=0)
    shutil.rmtree(base)
    for check in (lambda: shipped_parity("orphan", Job("parity")),
                  lambda: forgetting_probe("orphan", Job("probe"))):
        with pytest.raises(TailorError, match=f"the base model of adapter 'orphan' is "
                                              f"missing: {base}") as e:
            check()
        assert "put the model folder back" in e.value.hint
