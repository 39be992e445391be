"""The ready folder: the Modelfile parses (FROM, TEMPLATE in triple quotes, repeated PARAMETER
stop, SYSTEM), points at a GGUF that llama.cpp loads, and the user's GGUF is never moved or
changed."""
from __future__ import annotations

import os

import pytest

from engine.events import TailorError
from engine.ollama.gotemplate import parse
from engine.ollama.handoff import ModelSettings, write_folder
from engine.ollama.modelfile import ModelfileSpec, write_modelfile_folder
from engine.ollama.templates import go_messages
from tests.conftest import snapshot_tree

from .ggufs import make_gguf
from .modelfile_parser import ModelfileSyntaxError, parse_modelfile


def test_folder_with_modelfile_readme_and_linked_gguf(tmp_path):
    src_dir = tmp_path / "mine"
    src_dir.mkdir()
    gguf = make_gguf(src_dir / "tuned-f16.gguf", "qwen2")
    before = snapshot_tree(src_dir)
    settings = ModelSettings(system='Say "arr" a lot.\nAlways.', temperature=0.5, num_ctx=2048)
    r = write_folder(tmp_path / "out", "pirate:v1", gguf=gguf, settings=settings)

    out = tmp_path / "out"
    assert snapshot_tree(src_dir) == before  # the user's file is still there, unchanged
    assert (out / "tuned-f16.gguf").read_bytes() == gguf.read_bytes()
    assert os.path.samefile(out / "tuned-f16.gguf", gguf)  # a hard link, no extra space

    mf = parse_modelfile((out / "Modelfile").read_text())
    assert mf.get("from") == ["./tuned-f16.gguf"]
    assert (out / mf.get("from")[0]).is_file()
    template = mf.get("template")[0]
    assert template == r.template["template"]
    parse(template)  # a valid Go template
    assert mf.parameters("stop") == [f'{s}' for s in r.template["stops"]]
    assert len(mf.parameters("stop")) >= 2 and "<|im_end|>" in mf.parameters("stop")
    assert mf.parameters("temperature") == ["0.5"] and mf.parameters("num_ctx") == ["2048"]
    assert mf.get("system") == ['Say "arr" a lot.\nAlways.']

    readme = (out / "README.txt").read_text()
    assert "ollama create pirate:v1 -f Modelfile" in readme
    assert "llama-cli -m tuned-f16.gguf -cnv" in readme and "LM Studio" in readme
    assert r.command.endswith("ollama create pirate:v1 -f Modelfile")


def test_template_in_the_modelfile_renders_the_conversation(tmp_path):
    gguf = make_gguf(tmp_path / "g.gguf", "gemma")
    write_folder(tmp_path / "out", "g", gguf=gguf, settings=ModelSettings(system="Be kind."))
    mf = parse_modelfile((tmp_path / "out" / "Modelfile").read_text())
    text = parse(mf.get("template")[0]).render(go_messages([
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]))
    assert text == "<start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert "<end_of_turn>" in mf.parameters("stop")


def test_existing_folder_is_kept_unless_replace(tmp_path):
    gguf = make_gguf(tmp_path / "m.gguf", "qwen2")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TailorError, match="already exists and is not empty") as e:
        write_folder(out, "m", gguf=gguf)
    assert "--replace" in e.value.hint
    assert snapshot_tree(out) == {"notes.txt": b"mine"}
    # --replace does not widen it: the folder is not one Tailor wrote (tests/ollama/
    # test_replace_guard.py covers what --replace may replace)
    with pytest.raises(TailorError, match="only replaces a Modelfile folder Tailor wrote"):
        write_folder(out, "m", gguf=gguf, replace=True)
    assert snapshot_tree(out) == {"notes.txt": b"mine"}
    (out / "notes.txt").unlink()
    write_folder(out, "m", gguf=gguf)  # an empty folder is filled
    assert sorted(p.name for p in out.iterdir()) == [".tailor-modelfile.json", "Modelfile",
                                                     "README.txt", "m.gguf"]
    assert gguf.exists()


def test_adapter_only_folder_has_from_base_and_adapter(tmp_path, tiny_model):
    lora = make_gguf(tmp_path / "lora.gguf", "qwen2", general_type="adapter")
    write_folder(tmp_path / "out", "tuned", adapter_gguf=lora, base="qwen2.5:0.5b",
                 fallback_model_dir=tiny_model("qwen2"))
    mf = parse_modelfile((tmp_path / "out" / "Modelfile").read_text())
    assert mf.get("from") == ["qwen2.5:0.5b"] and mf.get("adapter") == ["./lora.gguf"]
    assert "<|im_end|>" in mf.parameters("stop")
    lora3 = make_gguf(tmp_path / "lora3.gguf", "qwen3", general_type="adapter")
    with pytest.raises(TailorError, match="cannot apply a LoRA adapter to a qwen3"):
        write_folder(tmp_path / "out3", "tuned", adapter_gguf=lora3, base="qwen3:0.6b")
    assert not (tmp_path / "out3").exists()


def test_triple_quotes_in_system_are_refused(tmp_path):
    gguf = make_gguf(tmp_path / "m.gguf", "qwen2")
    with pytest.raises(TailorError, match='contains """'):
        write_modelfile_folder(tmp_path / "out", name="m", gguf=gguf,
                               spec=ModelfileSpec(from_="x", system='say """hi"""'))
    assert not (tmp_path / "out").exists()


def test_parser_rejects_broken_modelfiles():
    with pytest.raises(ModelfileSyntaxError, match="unterminated triple quote"):
        parse_modelfile('FROM ./a.gguf\nTEMPLATE """{{ .Prompt }}\n')
    with pytest.raises(ModelfileSyntaxError, match="no FROM"):
        parse_modelfile("PARAMETER stop x\n")
    with pytest.raises(ModelfileSyntaxError, match="unknown instruction"):
        parse_modelfile("FROM a\nTEMPLTE x\n")


@pytest.mark.slow
def test_folder_gguf_loads_in_llama_cpp(tmp_path, tiny_model):
    """The GGUF the folder points at loads in llama.cpp and answers in chat mode."""
    try:
        from engine.ollama.cli import load_export_gguf

        export_gguf = load_export_gguf()
    except ImportError as e:
        pytest.fail(f"engine.export.export_gguf is not available yet ({e}); this test needs the "
                    "export engineer's GGUF writer to produce a llama.cpp-loadable file")
    llama_cpp = pytest.importorskip("llama_cpp")
    model_dir = tiny_model("qwen2")
    result = export_gguf(model_dir, tmp_path / "exports" / "tiny-qwen2-f16.gguf", "f16")
    r = write_folder(tmp_path / "out", "tiny-qwen", gguf=result.path,
                     fallback_model_dir=model_dir)
    mf = parse_modelfile((tmp_path / "out" / "Modelfile").read_text())
    gguf_in_folder = tmp_path / "out" / mf.get("from")[0]
    assert r.template["verified"] and r.template["family"] == "chatml"
    llm = llama_cpp.Llama(model_path=str(gguf_in_folder), n_ctx=256, verbose=False)
    tokens = llm.tokenize(b"<|im_start|>user\nhello<|im_end|>", special=True)
    assert len(tokens) >= 4
    out = llm.create_chat_completion([{"role": "user", "content": "hello"}], max_tokens=4,
                                     temperature=0.0)
    assert out["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qwen2", "llama3", "llama2", "gemma", "phi3"])
def test_modelfile_template_matches_llama_cpp_rendering_of_the_gguf(tmp_path, tiny_model, kind):
    """Export a tiny model (engine.export), write the folder from the GGUF alone, and compare
    the Modelfile's Go template with llama-cpp-python's own Jinja rendering of the chat
    template stored in that GGUF, for a two-turn conversation."""
    try:
        from engine.ollama.cli import load_export_gguf

        export_gguf = load_export_gguf()
    except ImportError as e:
        pytest.fail(f"engine.export.export_gguf is not available yet ({e})")
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from engine.tiny_models import SPECS

    result = export_gguf(tiny_model(kind), tmp_path / f"{kind}.gguf", "q8_0", verify=False)
    folder = write_folder(tmp_path / "out", f"tiny-{kind}", gguf=result.path)
    mf = parse_modelfile((tmp_path / "out" / "Modelfile").read_text())
    assert folder.template["verified"]
    assert SPECS[kind].eos_token in mf.parameters("stop")

    llm = llama_cpp.Llama(model_path=str(tmp_path / "out" / mf.get("from")[0]), vocab_only=True,
                          verbose=False)
    meta = llm.metadata

    def text(token_id: int) -> str:
        return llm.detokenize([token_id], special=True).decode("utf-8")

    bos = text(llm.token_bos()) if llm.token_bos() >= 0 else ""
    eos = text(llm.token_eos())
    messages = [{"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": "Four."},
                {"role": "user", "content": "And 3 + 3?"}]
    system = [{"role": "system", "content": "Answer briefly."}]
    jinja_messages = messages
    if folder.template["system_supported"]:
        jinja_messages = system + messages
    else:  # Gemma: no system role; Tailor opens the first user turn with the system text
        jinja_messages = [dict(messages[0], content="Answer briefly.\n\n" + messages[0]["content"]),
                          *messages[1:]]
    prompt = Jinja2ChatFormatter(template=meta["tokenizer.chat_template"], eos_token=eos,
                                 bos_token=bos)(messages=jinja_messages).prompt
    if meta.get("tokenizer.ggml.add_bos_token") == "true" and bos and prompt.startswith(bos):
        prompt = prompt[len(bos):]  # llama.cpp and Ollama add BOS when tokenizing
    go_text = parse(mf.get("template")[0]).render(go_messages(system + messages))
    assert go_text == prompt


def test_gguf_name_with_spaces(tmp_path):
    gguf = make_gguf(tmp_path / "my tuned model.gguf", "qwen2")
    write_folder(tmp_path / "out", "spaces", gguf=gguf)
    mf = parse_modelfile((tmp_path / "out" / "Modelfile").read_text())
    assert (tmp_path / "out" / mf.get("from")[0]).is_file()
    assert "llama-cli -m 'my tuned model.gguf' -cnv" in (tmp_path / "out" / "README.txt").read_text()
