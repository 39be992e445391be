"""The training tokenizer is the model's own (issue 12). transformers 5 rebuilds some tokenizer
classes from their source instead of reading tokenizer.json: with Llama 2's real
tokenizer_config.json (LlamaTokenizer) '  leading spaces' lost a "▁" ([1, 29871, 8236, 8162]
where the original and llama.cpp give [1, 259, 8236, 8162]); with StarCoder2's GPT2Tokenizer
the digit split was dropped. Tailor trained on that and served the model's own. Now the
loaded tokenizer is compared with the model's files and the faithful one is used (data check,
training, export), and the data check and the run record say which and why."""
from __future__ import annotations

import json
import shutil

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from engine.cli import main
from engine.events import ListReporter, Log, Started
from engine.models.tokenizer import choice_of, load_hf_tokenizer, load_tokenizer
from tests.conftest import snapshot_tree
from tests.tokenizer_cases import llama2_real_config, starcoder2_style

CASES = {
    # case: (builder, a string that shows the difference, the class transformers rebuilds)
    "llama2-real-config": (llama2_real_config, "  leading spaces", "LlamaTokenizer"),
    "starcoder2-gpt2tokenizer": (starcoder2_style, "ied 4 ½ months, 12345 ids", "GPT2Tokenizer"),
}


@pytest.fixture(scope="module")
def case_folders(tmp_path_factory):
    from engine.tiny_models import cached_tiny_model

    root = tmp_path_factory.mktemp("tokenizer-cases")
    return {name: build(cached_tiny_model, root / name) for name, (build, _, _) in CASES.items()}


def _chat(path):
    rows = [{"messages": [{"role": "user", "content": f"  leading spaces {i} and 12345"},
                          {"role": "assistant", "content": f" answer {i * 111}"}]}
            for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_the_rebuilt_tokenizer_is_replaced_by_the_models_own(case, case_folders):
    folder = case_folders[case]
    _, text, rebuilt_class = CASES[case]
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    want = reference.encode(text).ids
    # the difference as transformers 5 has it (if this fails, transformers changed: re-check)
    raw = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    assert type(raw).__name__ == rebuilt_class
    assert raw.encode(text) != want

    for tok in (load_hf_tokenizer(folder), load_tokenizer(folder)):
        assert list(tok.encode(text)) == want
        choice = choice_of(tok)
        assert choice.source == "tokenizer.json"
        assert choice.reason.startswith(
            f"tokenizer built from tokenizer.json: transformers' {rebuilt_class} (the "
            "tokenizer_class) tokenized ")
        assert "differently from the model's tokenizer.json, e.g. " in choice.reason
        first = choice.differences[0]
        assert first["reference"] == reference.encode(first["text"],
                                                      add_special_tokens=False).ids
        assert first["loaded"] == raw.encode(first["text"], add_special_tokens=False)


def test_llama2_leading_spaces_match_sentencepiece(case_folders):
    """The issue's example: BOS, then the same ids as the original SentencePiece model."""
    import sentencepiece

    folder = case_folders["llama2-real-config"]
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = load_tokenizer(folder)
    for text in ("  leading spaces", " Hello", "   three spaces", "a\n  b"):
        assert tok.encode(text) == [1] + sp.encode(text), text
    assert "it agrees with tokenizer.model (sentencepiece)" in choice_of(tok).reason
    # mlx-lm's wrapper around it still decodes and streams
    ids = tok.encode("  leading spaces")
    assert tok.decode(ids[1:]) == "  leading spaces"
    detok = tok.detokenizer
    detok.reset()
    for t in ids[1:]:
        detok.add_token(t)
    detok.finalize()
    assert detok.text.strip() == "leading spaces"


@pytest.mark.parametrize("case", list(CASES))
def test_data_check_says_which_tokenizer_and_why(case, case_folders, tmp_path, capsys):
    folder = case_folders[case]
    before = snapshot_tree(folder)
    data = _chat(tmp_path / "chat.jsonl")
    assert main(["data", "check", str(data), "--model", str(folder), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    note = next(n for n in notes if n.startswith("tokenizer built from tokenizer.json"))
    assert f"transformers' {CASES[case][2]}" in note
    assert snapshot_tree(folder) == before


def test_an_unchanged_tokenizer_adds_no_note(tiny_model, tmp_path, capsys):
    folder = tiny_model("qwen2")
    tok = load_tokenizer(folder)
    assert choice_of(tok).source == "transformers" and choice_of(tok).note() == ""
    assert "exactly as tokenizer.json" in choice_of(tok).reason
    assert main(["data", "check", str(_chat(tmp_path / "c.jsonl")), "--model", str(folder),
                 "--json"]) == 0
    assert not any("tokenizer" in n for n in json.loads(capsys.readouterr().out)["notes"])


def test_tokenizer_json_written_by_transformers_5_is_checked_against_sentencepiece(tiny_model):
    """The tiny Llama 2's tokenizer.json was saved by transformers 5 itself (Metaspace with
    prepend_scheme "first"), so it agrees with the rebuilt class and not with tokenizer.model,
    which the GGUF export and llama.cpp follow: the SentencePiece pipeline is used."""
    import sentencepiece

    folder = tiny_model("llama2")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = load_hf_tokenizer(folder)
    assert choice_of(tok).source == "tokenizer.model"
    assert choice_of(tok).reason.startswith("tokenizer rebuilt to follow tokenizer.model: ")
    assert tok.encode("  leading spaces") == [1] + sp.encode("  leading spaces")


def test_training_records_the_tokenizer_used(case_folders, tmp_path, tailor_home):
    from engine import library
    from engine.train.config import make_config
    from engine.train.run import train_adapter

    folder = shutil.copytree(case_folders["llama2-real-config"], tmp_path / "base")
    rep = ListReporter()
    train_adapter(str(folder), _chat(tmp_path / "chat.jsonl"), "faithful",
                  make_config(iters=1, eval_every=0, rank=4, batch_size=2), report=rep)
    started = rep.of(Started)[-1]
    record = started.info["base_model"]["tokenizer"]
    assert record["source"] == "tokenizer.json" and record["loaded_class"] == "LlamaTokenizer"
    assert any(isinstance(e, Log) and e.message.startswith("tokenizer built from tokenizer.json")
               for e in rep.events)
    manifest = library.get_adapter("faithful").manifest
    assert manifest["base_model"]["tokenizer"]["source"] == "tokenizer.json"


@pytest.mark.parametrize("case", list(CASES))
def test_export_tokenizes_as_training(case, case_folders, tmp_path):
    """Training and the GGUF agree: for Llama 2 leading spaces included (the check that used to
    record a space-prefix difference for such a model finds none), for StarCoder2 digit runs
    (llama.cpp's "starcoder" type splits them as the model's own tokenizer does)."""
    import llama_cpp  # noqa: F401 - the check needs llama.cpp

    from engine.export.gguf_export import export_gguf
    from tests.export.helpers import llama, llama_tokenize

    folder = case_folders[case]
    out = tmp_path / "out.gguf"
    result = export_gguf(folder, out, "f32")
    checks = {c["name"]: c for c in result.verification["checks"]}
    assert result.verification["passed"], checks
    assert all(c["passed"] is not None for c in checks.values()), checks
    tok = load_hf_tokenizer(folder)
    llm = llama(out)
    try:
        for text in (CASES[case][1], "  leading spaces", " Hello 2024", "x </s> y 31415"):
            assert llama_tokenize(llm, text) == tok.encode(text), text
    finally:
        llm.close()


def test_a_difference_without_faithful_replacement_is_a_warning(tiny_model, tmp_path, capsys):
    """A SentencePiece model that collapses repeated spaces (remove_extra_whitespaces): no
    tokenizers pipeline does that, so the loaded tokenizer stays and the user is warned."""
    import io

    import sentencepiece as spm

    from engine.tiny_models import corpus

    folder = tmp_path / "m"
    shutil.copytree(tiny_model("llama2"), folder)
    (folder / "tokenizer.json").unlink()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=buf, vocab_size=600, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, remove_extra_whitespaces=True,
        unk_id=0, bos_id=1, eos_id=2, minloglevel=3, num_threads=1)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    tok = load_tokenizer(folder)
    choice = choice_of(tok)
    assert choice.reason.startswith("WARNING: ") and "no faithful replacement" in choice.reason
    assert choice.differences and choice.differences[0]["reference_file"] == "tokenizer.model"
    rep = ListReporter()
    from engine.models.tokenizer import record_tokenizer_choice

    assert record_tokenizer_choice(tok, rep, "train")["source"] == "transformers"
    assert [e.level for e in rep.of(Log)] == ["warning"]
    assert main(["data", "check", str(_chat(tmp_path / "c.jsonl")), "--model", str(folder),
                 "--json"]) == 0
    assert any(n.startswith("WARNING: ") for n in json.loads(capsys.readouterr().out)["notes"])
