"""`tailor demo` and the headless `tailor`: the whole product end to end on the sample data."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from app.launcher import main as launcher_main
from engine import library
from engine.atomic import sha256_file
from engine.cli import main as cli_main
from engine.demo import DEMO_DATASET, TRY_PROMPTS
from tests.ollama.modelfile_parser import parse_modelfile

SHORT_DEMO = ["demo", "--iters", "6", "--quant", "f16"]
# Enough steps for the adapter to memorise the demo's six facts with a margin. Measured with
# training seeds 0-3 (try-it prompts answered exactly of 3): 60 steps 3, 2, 3, 1; 100 steps
# 2, 2, 3, 3; 200 (the demo's own) 3, 3, 3, 3. The test runs seed 0.
LEARNING_DEMO = ["demo", "--iters", "100", "--quant", "f16"]


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.xdist_group("demo")
def test_demo_trains_exports_verifies_and_writes_modelfile(tmp_path, capsys):
    sample_before = sha256_file(DEMO_DATASET)
    events_file = tmp_path / "events.jsonl"
    out = tmp_path / "demo-out"
    rc = cli_main([*LEARNING_DEMO, "--out", str(out), "--events", str(events_file), "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    runs = list(out.iterdir())
    assert len(runs) == 1
    run_dir = runs[0]
    gguf = next(run_dir.glob("*.gguf"))
    modelfile = parse_modelfile((run_dir / "ollama" / "Modelfile").read_text())
    assert modelfile.get("from") == [f"./{gguf.name}"]
    assert "<|im_end|>" in modelfile.parameters("stop")
    assert (run_dir / "ollama" / gguf.name).stat().st_size == gguf.stat().st_size

    adapters = library.list_adapters()
    assert [a.status for a in adapters] == ["finished"]
    assert adapters[0].weights.exists()

    # the summary names every place something was written
    for where in (str(gguf), str(run_dir / "ollama"), str(adapters[0].path), "verification: PASSED",
                  "ollama create"):
        assert where in printed

    events = _events(events_file)
    demo_stages = [e["stage"] for e in events if e["job"] == "demo" and e["event"] == "progress"]
    assert demo_stages == ["model", "data", "train", "try", "export", "modelfile"]
    finished = [e for e in events if e["job"] == "demo" and e["event"] == "finished"]
    assert finished and finished[0]["result"]["verification"]["passed"] is True
    assert any(e["event"] == "step" and e["job"] == "demo:train" for e in events)
    assert sha256_file(DEMO_DATASET) == sample_before

    # The demo visibly learns: the adapter answers at least two try-it prompts exactly as the
    # dataset does, the random base none; the summary says so, and says which prompts were
    # trained on.
    tries = finished[0]["result"]["tries"]
    assert [t["prompt"] for t in tries] == TRY_PROMPTS
    references = _references(DEMO_DATASET)
    for t in tries:
        assert t["reference"] == references[t["prompt"]]
        assert t["base_matches"] == (t["base"] == t["reference"])
        assert t["adapter_matches"] == (t["adapter"] == t["reference"])
    assert sum(t["adapter"] == t["reference"] for t in tries) >= 2, tries
    assert not any(t["base"] == t["reference"] for t in tries), tries
    adapter_exact = sum(t["adapter_matches"] for t in tries)
    assert f"exact answers: base model 0 of 3, with the adapter {adapter_exact} of 3" in printed
    for t in tries:
        assert f"      + adapter   {t['adapter']!r}  " \
               f"{'matches' if t['adapter_matches'] else 'differs'}" in printed
    # where each prompt was: the seeded split holds lines 1 and 15 out for validation
    assert [t["where"] for t in tries] == ["train", "valid", "train"]
    assert "'What does a cow say?' (held out for validation: never trained on)" in printed
    assert "'What is the opposite of hot?' (in the training data)" in printed


def _references(path: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}


def test_demo_dataset_is_what_the_script_generates_and_holds_the_try_it_prompts():
    samples = DEMO_DATASET.parent
    spec = importlib.util.spec_from_file_location("make_samples", samples / "make_samples.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert DEMO_DATASET.read_text(encoding="utf-8") == gen.as_jsonl(gen.demo_examples())
    references = _references(DEMO_DATASET)
    assert set(TRY_PROMPTS) <= set(references)
    # the app's first-run sample keeps its own 240 conversations
    assert (samples / "chat_sample.jsonl").read_text(encoding="utf-8") == \
        gen.as_jsonl(gen.examples())


@pytest.mark.xdist_group("demo")
def test_demo_on_a_dataset_without_the_prompts_shows_answers_without_a_verdict(tmp_path, capsys):
    data = tmp_path / "other.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}) + "\n"
        for w in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")))
    rc = cli_main([*SHORT_DEMO, "--iters", "1", "--dataset", str(data), "--out",
                   str(tmp_path / "o"), "--quiet", "--no-verify"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert printed.count("(not in the dataset)") == 3
    assert "reference" not in printed and "exact answers" not in printed


@pytest.mark.xdist_group("demo")
def test_second_demo_never_overwrites_the_first(tmp_path, capsys):
    out = tmp_path / "demo-out"
    assert cli_main([*SHORT_DEMO, "--iters", "2", "--out", str(out), "--quiet",
                     "--no-verify"]) == 0
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli_main([*SHORT_DEMO, "--iters", "2", "--out", str(out), "--quiet",
                     "--no-verify"]) == 0
    assert len(list(out.iterdir())) == 2
    assert len(library.list_adapters()) == 2
    assert all(p.read_bytes() == data for p, data in first.items())


def test_demo_with_a_missing_dataset_says_which_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    rc = cli_main(["demo", "--dataset", str(missing), "--out", str(tmp_path / "o"), "--iters", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert str(missing) in err
    assert library.list_adapters() == []


@pytest.mark.xdist_group("demo")
def test_tailor_without_a_display_runs_the_demo(tmp_path, capsys):
    rc = launcher_main([], display=False,
                       demo_argv=(*SHORT_DEMO, "--iters", "2", "--out", str(tmp_path), "--quiet"))
    captured = capsys.readouterr()
    assert rc == 0
    assert "no display found" in captured.err
    assert "Tailor demo finished" in captured.out


def test_cli_without_arguments_prints_help(capsys):
    assert cli_main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
