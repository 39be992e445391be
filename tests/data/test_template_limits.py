"""Chat templates are rendered bounded in time and size, everywhere (issue 11: nested
``range(100000)`` loops hung past 120 s; ``'x' * 10**10`` grew one process to 23.8 GB until the
system killed it; ``generate`` printed a SecurityError traceback). Each bomb ends within
seconds in a message naming the template's file and the limit, with no traceback and little
memory, in ``tailor data check`` and ``tailor generate``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.data import DataConfig, prepare_dataset
from engine.data.chat_template import (OUTPUT_FLOOR_CHARS, RENDER_CPU_SECONDS, ChatTemplate,
                                       TemplateLimitError)
from engine.data.render import Renderer
from engine.events import TailorError
from engine.ollama.templates import TokenizerInfo, convert_chat_template, jinja_renderer
from tests.data.conftest import chat, jsonl

REPO = Path(__file__).resolve().parents[2]
NESTED_LOOPS = ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}"
                "{% endfor %}")
HUGE_STRING = "{{ 'x' * 10**10 }}"
RECURSION = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
ESCAPE = "{{ ''.__class__.__mro__ }}{% for m in messages %}{{ m['content'] }}{% endfor %}"

TIME_LIMIT = f"it ran for more than {RENDER_CPU_SECONDS:g} s of CPU time"
SIZE_LIMIT = ("a string repeated 10,000,000,000 times would be 10,000,000,000 characters long "
              f"(the limit for one render is {OUTPUT_FLOOR_CHARS:,})")
DEPTH_LIMIT = "it recursed too deeply (a macro that calls itself without end?)"
BOMBS = {"nested_loops": (NESTED_LOOPS, TIME_LIMIT), "huge_string": (HUGE_STRING, SIZE_LIMIT),
         "recursion": (RECURSION, DEPTH_LIMIT)}
MESSAGES = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."}]


def model_with_template(tiny_model, tmp_path: Path, template: str, kind: str = "qwen2") -> Path:
    """A copy of a tiny model whose tokenizer_config.json carries ``template``."""
    folder = tmp_path / f"model-{kind}"
    shutil.copytree(tiny_model(kind), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg))
    return folder


def run_engine(args: list[str], timeout: float = 120) -> tuple[int, str, str, int, float]:
    """(exit status, stdout, stderr, the child's peak memory in bytes, seconds)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tailor-out-{os.getpid()}-{time.time()}"
    with open(f"{out_path}.out", "w+") as out, open(f"{out_path}.err", "w+") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=REPO, stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL)
        while True:  # wait4: this child's own peak memory (RUSAGE_CHILDREN mixes all children)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                pytest.fail(f"{args[:2]} still running after {timeout} s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for suffix in (".out", ".err"):
        Path(f"{out_path}{suffix}").unlink()
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, stdout, stderr, usage.ru_maxrss * scale, seconds


# ----------------------------------------------------------------------------------------------
# The renderer itself


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_each_bomb_stops_within_seconds_naming_the_template(name):
    source, limit = BOMBS[name]
    t0 = time.monotonic()
    with pytest.raises(TemplateLimitError) as err:
        ChatTemplate(source, "/models/m/tokenizer_config.json").render({"messages": MESSAGES})
    assert time.monotonic() - t0 < 15  # 2 s of CPU; the machine may be busy
    assert err.value.message.startswith("/models/m/tokenizer_config.json: the chat template "
                                        f"was stopped: {limit}")
    assert "--chat-template" in err.value.hint


@pytest.mark.parametrize("source,limit", [
    ("{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
     "{{ f(0) }}", TIME_LIMIT),  # 2**60 calls, each shallow
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}", "a string joined with ~ would be 8,388,608 characters long"),
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}", "a joined string would be 8,388,608 characters long"),
    ("{{ 'x'|center(1000000000) }}", "the center filter with an argument of 1,000,000,000"),
    ("{{ '{:999999999}'.format(1) }}", "str.format would be 1,000,000,012 characters long"),
    ("{{ '%999999999d' % 1 }}", "a %-formatted string would be 1,000,000,011 characters"),
    ("{% set s = 'x' * 3000000 %}{{ ([s] * 100000)|join }}", "a list repeated 100,000 times"),
    ("{% set s = 'x' * 3000 %}{{ s|replace('x', s) }}", "replace would be 9,000,000"),
    ("{% set s = 'x' * 3000000 %}{% set b %}{% for i in range(100000) %}{{ s ~ i }}{% endfor %}"
     "{% endset %}{{ b|length }}", "it made more than 33,554,432 characters of text"),
    # 1,000 characters a step: the output limit is reached in ~4,200 steps, long before the
    # CPU-time limit on a slow machine (one 'x' a step raced it: 4.1M steps took 2 s there)
    ("{% set s = 'x' * 1000 %}{% for a in range(100000) %}{% for b in range(100000) %}{{ s }}"
     "{% endfor %}{% endfor %}", "it wrote more than 4,194,304 characters for one conversation"),
    ("{{ (range(1000)|list)|tojson(indent=100000) }}", "tojson would be"),
    ("{{ 2 ** 100000000 }}", "a number of about 200,000,000 bits would be computed"),
    ("{{ lipsum(100000) }}", "lipsum() would be 120,000,000 characters long"),
])
def test_other_ways_to_exhaust_time_or_memory(source, limit):
    t0 = time.monotonic()
    with pytest.raises(TemplateLimitError, match="the chat template was stopped: ") as err:
        ChatTemplate(source, "t.jinja").render({"messages": MESSAGES})
    assert limit in err.value.message
    assert time.monotonic() - t0 < 15


def test_the_output_cap_grows_with_the_conversation():
    # A real long example (5 Mi characters, over the 4 Mi floor) renders in full.
    long = "y" * (5 << 20)
    t = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}", "t")
    assert len(t.render({"messages": [{"role": "user", "content": long}]})) == 5 << 20


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "gemma", "llama2", "phi3"])
def test_real_templates_render_as_transformers_does(tokenizer, kind):
    tok = tokenizer(kind)
    convs = [MESSAGES, [{"role": "user", "content": "Only a question"}],
             MESSAGES + [{"role": "user", "content": "And again?"}]]
    renderer = Renderer(tok)
    for conv in convs:
        for gen in (False, True):
            want = tok.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False)
            assert renderer.render_messages(conv, add_generation_prompt=gen) == want


# ----------------------------------------------------------------------------------------------
# Every place that renders


def test_data_import_stops_at_the_first_render_naming_the_file(write, tokenizer):
    template = write("bomb.jinja", HUGE_STRING)
    path = write("d.jsonl", jsonl([chat(i) for i in range(5)]))
    with pytest.raises(TemplateLimitError) as err:
        prepare_dataset(path, tokenizer(), DataConfig(chat_template=str(template)))
    assert err.value.message == f"{template}: the chat template was stopped: {SIZE_LIMIT}"
    with pytest.raises(TemplateLimitError, match="^the --chat-template text: "):
        prepare_dataset(path, tokenizer(), DataConfig(chat_template=RECURSION))


def test_ollama_conversion_uses_the_bounded_renderer():
    with pytest.raises(TemplateLimitError, match="it recursed too deeply"):
        jinja_renderer(RECURSION, TokenizerInfo())([{"role": "user", "content": "x"}], True)
    # Not swallowed into an "unverified" template with a note: the conversion stops.
    with pytest.raises(TemplateLimitError, match="the chat template was stopped: "):
        convert_chat_template("<|im_start|>" + HUGE_STRING, {"eos_token": "<|im_end|>"})


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_data_check_cli_ends_with_the_message(write, tiny_model, tmp_path, name):
    source, limit = BOMBS[name]
    model = model_with_template(tiny_model, tmp_path, source)
    data = write("d.jsonl", jsonl([chat(i) for i in range(5)]))
    before = data.read_bytes()
    rc, out, err, peak, seconds = run_engine(["data", "check", str(data), "--model", str(model)])
    assert rc == 1
    assert "Traceback" not in err + out
    assert f"{model / 'tokenizer_config.json'}: the chat template was stopped: {limit}" in err
    assert peak < 1 << 30, f"peak memory {peak / 2**20:.0f} MiB"
    assert seconds < 90
    assert data.read_bytes() == before


@pytest.mark.parametrize("name", ["nested_loops", "huge_string"])
def test_generate_cli_ends_with_the_message(tiny_model, tmp_path, name):
    source, limit = BOMBS[name]
    model = model_with_template(tiny_model, tmp_path, source)
    rc, out, err, peak, seconds = run_engine(["generate", "--model", str(model), "--prompt",
                                              "Hello", "--max-tokens", "4"])
    assert rc == 1
    assert "Traceback" not in err + out
    assert f"{model / 'tokenizer_config.json'}: the chat template was stopped: {limit}" in err
    assert peak < 1 << 30, f"peak memory {peak / 2**20:.0f} MiB"
    assert seconds < 90


def test_generate_cli_names_a_sandbox_violation(tiny_model, tmp_path):
    model = model_with_template(tiny_model, tmp_path, ESCAPE)
    rc, out, err, _peak, _seconds = run_engine(["generate", "--model", str(model), "--prompt",
                                                "Hello", "--max-tokens", "4"])
    assert rc == 1
    assert "Traceback" not in err + out and "SecurityError" not in err
    assert (f"{model / 'tokenizer_config.json'}: the chat template broke the sandbox's rules: "
            "access to attribute '__class__' of 'str' object is unsafe") in err
    assert "--raw" in err


def test_generate_renders_like_training_and_merges_a_refused_system_turn(tiny_model):
    # Gemma's template refuses a system role: the prompt merges it into the user turn, as the
    # training data was; the result matches transformers' rendering of the merged turn.
    from mlx_lm.tokenizer_utils import load

    tok = load(tiny_model("gemma"))
    renderer = Renderer(tok)
    merged = [{"role": "user", "content": "Be brief.\n\nHello"}]
    got = renderer.render_prompt([{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hello"}])
    assert got == tok.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
    with pytest.raises(TailorError, match="the chat template failed on this prompt"):
        Renderer(tok, chat_template="{{ raise_exception('no') }}").render_prompt(merged)


def test_the_engine_has_no_other_template_renderer():
    # A new call site must go through engine/data/chat_template.py, not around its limits.
    others = []
    for path in sorted((REPO / "engine").rglob("*.py")):
        if path.name == "chat_template.py":
            continue
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        for pattern in ("apply_chat_template(", "SandboxedEnvironment", "Environment(",
                        "jinja2.Template", ".from_string("):
            if pattern in code:
                others.append(f"{path.relative_to(REPO)}: {pattern}")
    assert not others
