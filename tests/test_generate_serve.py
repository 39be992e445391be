"""`tailor generate --serve`: one loaded base answers many requests read on stdin; adapters are
switched in and out without reloading it (issue 14, Playground)."""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine import library
from engine.events import ReplyFinished, decode_event
from engine.generate import generate_text
from engine.results import GenerateReply
from engine.tiny_models import CHATML_TEMPLATE
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.train.conftest import ANSWER, write_toy_chat

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["Tell me about the book number 999.", "What is a river?"]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> Path:
    """A library folder with a LoRA, a DoRA and a full fine-tune of the tiny qwen2 (the LoRA
    taught to answer ANSWER), trained once for the module."""
    folder = tmp_path_factory.mktemp("trained") / "adapters"
    data = write_toy_chat(folder.parent / "toy.jsonl")
    for name, method, iters in (("lora", "lora", 40), ("dora", "dora", 15), ("full", "full", 10)):
        train_adapter(str(tiny_model("qwen2")), data, name,
                      make_config(method=method, iters=iters, learning_rate=2e-3, rank=8,
                                  dropout=0.0, eval_every=0, num_layers=2),
                      library_dir=folder)
    return folder


@pytest.fixture
def adapters(trained, tailor_home, tiny_model) -> Path:
    """The trained adapters in this test's library; returns their base model's folder."""
    shutil.copytree(trained, tailor_home / "adapters", dirs_exist_ok=True)
    return tiny_model("qwen2")


class Server:
    """`tailor generate --serve ...` in a child process, its stdout read as events."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "generate", "--serve", *args, "--quiet"],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", env={**os.environ})
        self.events: queue.Queue = queue.Queue()
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self.events.put(decode_event(line))
        self.events.put(None)

    def send(self, line: dict | str) -> None:
        self.proc.stdin.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = 60):
        return self.events.get(timeout=timeout)

    def until(self, kinds: tuple[str, ...], timeout: float = 60) -> list:
        """Events up to and including the next one of ``kinds``."""
        out = []
        while True:
            e = self.next(timeout)
            assert e is not None, "the server ended early: " + self.stderr()
            out.append(e)
            if e.kind in kinds:
                return out

    def reply(self, request: dict) -> GenerateReply:
        self.send(request)
        end = self.until(("reply.finished", "reply.failed"))[-1]
        assert isinstance(end, ReplyFinished), end
        assert end.request == str(request["id"])
        return end.result

    def close(self, timeout: float = 60) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else ""


def test_answers_equal_the_one_shot_ones_token_for_token(adapters):
    # Greedy answers of one served base with each adapter switched on and off, in a mixed
    # order, against `tailor generate` loading everything afresh for each answer.
    model = str(adapters)
    expected = {(p, a): generate_text(model if a is None else None, a, p, max_tokens=12)
                for p in PROMPTS for a in (None, "lora", "dora", "full")}
    one_shot = subprocess.run([sys.executable, "-m", "engine", "generate", "--adapter", "lora",
                               "--prompt", PROMPTS[0], "--max-tokens", "12", "--events", "-",
                               "--quiet"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
    finished = decode_event(one_shot.stdout.strip().splitlines()[-1])
    assert finished.result.text == expected[(PROMPTS[0], "lora")]
    assert expected[(PROMPTS[0], "lora")].startswith(ANSWER)
    for a in ("lora", "dora", "full"):  # each adapter changes the answer: a real comparison
        assert expected[(PROMPTS[0], a)] != expected[(PROMPTS[0], None)]

    server = Server("--model", model, "--max-tokens", "12")
    started = server.until(("started",))[-1]
    assert started.config["model"] == str(Path(model).resolve())
    order = [None, "lora", None, "dora", "full", "lora", "dora", None, "full", None]
    n = 0
    for a in order:
        for p in PROMPTS:
            n += 1
            got = server.reply({"id": n, "prompt": p, "adapter": a})
            assert (got.text, got.adapter) == (expected[(p, a)], a or ""), (p, a, n)
            assert got.tokens >= 1 and not got.stopped and got.first_token_seconds is not None
    assert server.close() == 0
    final = decode_event(server.lines[-1])
    assert final.kind == "finished" and final.result.requests == n
    assert "Traceback" not in server.stderr()


def test_the_workers_own_adapter_is_on_by_default_and_switches_off(adapters):
    server = Server("--adapter", "lora", "--max-tokens", "12")
    server.until(("started",))
    on = server.reply({"id": "on", "prompt": PROMPTS[0]})
    off = server.reply({"id": "off", "prompt": PROMPTS[0], "adapter": False})
    again = server.reply({"id": "again", "prompt": PROMPTS[0], "adapter": "on"})
    assert on.text == again.text == generate_text(None, "lora", PROMPTS[0], max_tokens=12)
    assert off.text == generate_text(str(adapters), None, PROMPTS[0], max_tokens=12)
    # a system prompt, given with "prompt" or as "messages", renders as the one-shot's does
    by_prompt = server.reply({"id": "p", "prompt": PROMPTS[1], "system": "Be brief."})
    by_messages = server.reply({"id": "m", "system": "Be brief.",
                                "messages": [{"role": "user", "content": PROMPTS[1]}]})
    assert by_prompt.text == by_messages.text == generate_text(
        None, "lora", PROMPTS[1], system="Be brief.", max_tokens=12)
    assert server.close() == 0


def test_cancel_stops_the_reply_in_flight_and_a_queued_one(tiny_model):
    server = Server("--model", str(tiny_model("qwen2")))
    server.until(("started",))
    # a reply that would take many minutes, and one queued behind it
    server.send({"id": "long", "prompt": "Hi", "max_tokens": 1_000_000})
    server.send({"id": "queued", "prompt": "Hi", "max_tokens": 1_000_000})
    first = server.until(("reply",))[-1]
    assert first.request == "long"
    server.send({"cancel": "queued"})
    server.send({"cancel": "long"})
    ends = [e for e in server.until(("reply.finished",)) if e.kind == "reply.finished"]
    ends += [e for e in server.until(("reply.finished",)) if e.kind == "reply.finished"]
    long, queued = ends
    assert (long.request, long.result.stopped) == ("long", True)
    assert long.result.text and long.result.tokens < 1_000_000
    assert (queued.request, queued.result.stopped, queued.result.text) == ("queued", True, "")
    # the worker serves on
    after = server.reply({"id": "after", "prompt": "Hi", "max_tokens": 3})
    assert after.tokens == 3 and not after.stopped
    server.send("quit")
    assert server.proc.wait(60) == 0


def test_bad_requests_are_answered_and_the_worker_serves_on(tiny_model, adapters, tmp_path,
                                                            tailor_home):
    # A chat template that refuses one prompt, a model other adapters were not trained on.
    model = tmp_path / "model"
    shutil.copytree(tiny_model("qwen2"), model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["chat_template"] = ("{% if messages[-1]['content'] == 'boom' %}"
                            "{{ raise_exception('boom is not allowed here') }}{% endif %}"
                            + CHATML_TEMPLATE)
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))

    server = Server("--model", str(model), "--max-tokens", "4")
    server.until(("started",))
    bad = ["{not json", '["a list"]', {"id": "k", "prompt": "Hi", "max_token": 3},
           {"id": "e", "prompt": ""}, {"id": "t", "prompt": "Hi", "temperature": -1},
           {"id": "m", "prompt": "Hi", "max_tokens": 0}, {"id": "u", "prompt": "Hi",
                                                          "adapter": "nope"},
           {"id": "o", "prompt": "Hi", "adapter": "lora"},
           {"id": "on", "prompt": "Hi", "adapter": True}, {"id": "b", "prompt": "boom"}]
    for line in bad:
        server.send(line)
    failures = []
    for _ in bad:
        e = server.until(("reply.failed", "reply.finished"))[-1]
        assert e.kind == "reply.failed", e
        assert e.message and e.hint, e
        failures.append((e.request, e.message))
    assert failures[0][0] == failures[1][0] == ""  # (no id to name)
    assert "line 1 is not JSON" in failures[0][1]
    assert "request on line 2 is not a JSON object" in failures[1][1]
    got = dict(failures[2:])
    assert "unknown keys: max_token" in got["k"]
    assert '"prompt" must be non-empty text' in got["e"]
    assert '"temperature" must be a number of 0 or more' in got["t"]
    assert '"max_tokens" must be a whole number' in got["m"]
    assert "no adapter named 'nope'" in got["u"]
    assert "was trained on" in got["o"] and str(model) in got["o"]
    assert "started without --adapter" in got["on"]
    assert "boom is not allowed here" in got["b"]
    ok = server.reply({"id": "ok", "prompt": "Hi"})
    assert ok.tokens == 4
    assert server.close() == 0
    assert "Traceback" not in server.stderr()


def test_a_damaged_adapter_fails_its_request_and_leaves_the_base_as_it_was(adapters,
                                                                           tailor_home):
    damaged = tailor_home / "adapters" / "damaged"
    shutil.copytree(library.get_adapter("lora").path, damaged)
    config = json.loads((damaged / "adapter_config.json").read_text())
    config["lora_parameters"]["rank"] = 4  # the weights are rank 8: they do not fit
    (damaged / "adapter_config.json").write_text(json.dumps(config))
    server = Server("--model", str(adapters), "--max-tokens", "12")
    server.until(("started",))
    server.send({"id": "d", "prompt": PROMPTS[0], "adapter": "damaged"})
    e = server.until(("reply.failed", "reply.finished"))[-1]
    assert e.kind == "reply.failed" and "does not fit the loaded model" in e.message, e
    base = server.reply({"id": "base", "prompt": PROMPTS[0]})
    lora = server.reply({"id": "lora", "prompt": PROMPTS[0], "adapter": "lora"})
    assert base.text == generate_text(str(adapters), None, PROMPTS[0], max_tokens=12)
    assert lora.text == generate_text(None, "lora", PROMPTS[0], max_tokens=12)
    assert server.close() == 0


def test_stop_ends_every_reply_and_the_worker(tiny_model):
    server = Server("--model", str(tiny_model("qwen2")))
    server.until(("started",))
    server.send({"id": "long", "prompt": "Hi", "max_tokens": 1_000_000})
    server.until(("reply",))
    server.send("stop")
    events = server.until(("cancelled",))
    ends = [e for e in events if e.kind == "reply.finished"]
    assert [(e.request, e.result.stopped) for e in ends] == [("long", True)]
    assert server.proc.wait(60) == 130


def test_serve_refuses_events_flag_and_a_missing_model(tiny_model, tmp_path):
    # --events - would also watch stdin for `stop` and take the requests: refused, on stdout.
    r = subprocess.run([sys.executable, "-m", "engine", "generate", "--serve", "--model",
                        str(tiny_model("qwen2")), "--events", "-", "--quiet"], cwd=REPO,
                       input="", capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    e = decode_event(r.stdout.strip().splitlines()[-1])
    assert e.kind == "failed" and "leave out --events" in e.message
    r = subprocess.run([sys.executable, "-m", "engine", "generate", "--serve", "--model",
                        str(tmp_path / "gone"), "--quiet"], cwd=REPO, input="",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    e = decode_event(r.stdout.strip().splitlines()[-1])
    assert e.kind == "failed" and "model folder not found" in e.message and e.hint


def test_an_adapter_trained_further_is_loaded_again(adapters, tailor_home):
    # A resumed run rewrites the adapter's weights under the same name: the worker must not
    # answer with the copy it loaded before. Here the new weights are the old ones with
    # lora_b zeroed, so the adapter then answers as the base does.
    import mlx.core as mx

    server = Server("--model", str(adapters), "--max-tokens", "12")
    server.until(("started",))
    first = server.reply({"id": "1", "prompt": PROMPTS[0], "adapter": "lora"})
    assert first.text == generate_text(None, "lora", PROMPTS[0], max_tokens=12)
    weights = tailor_home / "adapters" / "lora" / "adapters.safetensors"
    tensors = mx.load(str(weights))
    mx.save_safetensors(str(weights), {k: mx.zeros_like(v) if k.endswith("lora_b") else v
                                       for k, v in tensors.items()})
    server.reply({"id": "base", "prompt": PROMPTS[0], "adapter": None})
    again = server.reply({"id": "2", "prompt": PROMPTS[0], "adapter": "lora"})
    base = generate_text(str(adapters), None, PROMPTS[0], max_tokens=12)
    assert again.text == base != first.text
    assert server.close() == 0
