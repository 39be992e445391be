"""The hand-off to Ollama against the strict fake server: the success path and every fault.

Each fault test checks what a user would see: a clear message, the GGUF untouched, and no model
reported as created.
"""
from __future__ import annotations

import threading
import time

import pytest

from engine.events import CancelToken, Cancelled, ListReporter, Progress, TailorError
from engine.ollama.client import OllamaClient, OllamaError, resolve_host
from engine.ollama.handoff import ModelSettings, send_adapter, send_gguf

from .fake_server import BASE_TEMPLATE, FakeOllama, add_base_model, free_port
from .ggufs import make_gguf


def client_for(server, **kw) -> OllamaClient:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("stream_timeout", 2.0)
    return OllamaClient(server.host, **kw)


def assert_kept(path, before: bytes) -> None:
    assert path.exists() and path.read_bytes() == before


# ----------------------------------------------------------------------------------------------
# Success


def test_create_uploads_once_then_reuses_the_blob_and_confirms_with_show(server, gguf):
    before = gguf.read_bytes()
    rep = ListReporter()
    with client_for(server) as c:
        r = send_gguf(c, gguf, "my-model", report=rep,
                      settings=ModelSettings(system="You are terse.", temperature=0.3,
                                             num_ctx=4096))
    assert r.created and r.uploaded and r.model == "my-model:latest"
    assert server.count("POST", "/api/blobs/") == 1
    assert server.count("POST", "/api/show") == 1  # success only after show confirmed
    m = server.models["my-model:latest"]
    assert "<|im_start|>" in m["template"] and m["system"] == "You are terse."
    assert "<|im_end|>" in m["parameters"]["stop"]
    assert m["parameters"]["temperature"] == 0.3 and m["parameters"]["num_ctx"] == 4096
    assert r.statuses[-1] == "success"
    progress = rep.of(Progress)
    assert progress and progress[-1].done == progress[-1].total  # the bar reaches the end
    assert_kept(gguf, before)

    # Second model from the same file: HEAD says 200, nothing is uploaded again.
    with client_for(server) as c:
        r2 = send_gguf(c, gguf, "my-model:v2")
    assert r2.created and not r2.uploaded
    assert server.count("POST", "/api/blobs/") == 1
    assert server.count("HEAD", "/api/blobs/") >= 2


def test_status_lists_version_and_models(server, gguf):
    with client_for(server) as c:
        send_gguf(c, gguf, "one")
        st = c.status()
    assert st.reachable and st.version == server.version and st.models == ["one:latest"]


def test_quantize_is_sent_for_an_f16_file(server, gguf):
    with client_for(server) as c:
        r = send_gguf(c, gguf, "small", quant="q4_k_m")
    assert r.quantize == "q4_K_M" and server.models["small:latest"]["quantize"] == "q4_K_M"


def test_quantize_refused_for_an_already_quantized_file(server, tmp_path):
    q8 = make_gguf(tmp_path / "m-q8.gguf", "qwen2", file_type=7)
    with client_for(server) as c, pytest.raises(TailorError, match="already quantized"):
        send_gguf(c, q8, "small", quant="q8_0")
    assert server.count("POST", "/api/blobs/") == 0  # refused before any upload


def test_name_in_use_needs_replace(server, gguf):
    before = gguf.read_bytes()
    with client_for(server) as c:
        send_gguf(c, gguf, "taken")
        original = dict(server.models["taken:latest"])
        with pytest.raises(TailorError, match="already has a model named taken:latest") as e:
            send_gguf(c, gguf, "taken:latest", settings=ModelSettings(system="new"))
        assert "--replace" in e.value.hint
        assert server.models["taken:latest"] == original  # untouched
        r = send_gguf(c, gguf, "taken", replace=True, settings=ModelSettings(system="new"))
    assert r.created and server.models["taken:latest"]["system"] == "new"
    assert_kept(gguf, before)


def test_adapter_only_uses_from_and_adapters(server, tmp_path, tiny_model):
    base = make_gguf(tmp_path / "base.gguf", "qwen2")
    add_base_model(server, "qwen-base", base)
    lora = make_gguf(tmp_path / "lora.gguf", "qwen2", general_type="adapter")
    with client_for(server) as c:
        r = send_adapter(c, lora, "tuned", "qwen-base", fallback_model_dir=tiny_model("qwen2"))
    m = server.models["tuned:latest"]
    assert r.created and m["from"] == "qwen-base:latest" and list(m["adapters"]) == ["lora.gguf"]
    assert "<|im_end|>" in m["parameters"]["stop"]


def test_adapter_only_refused_for_qwen3_and_missing_base(server, tmp_path, tiny_model):
    lora3 = make_gguf(tmp_path / "lora3.gguf", "qwen3", general_type="adapter")
    with client_for(server) as c, pytest.raises(TailorError, match="cannot apply a LoRA") as e:
        send_adapter(c, lora3, "tuned", "qwen-base", fallback_model_dir=tiny_model("qwen3"))
    assert "fuses" in e.value.hint
    lora = make_gguf(tmp_path / "lora.gguf", "qwen2", general_type="adapter")
    with client_for(server) as c, pytest.raises(TailorError, match="no model qwen-base:latest"):
        send_adapter(c, lora, "tuned", "qwen-base", fallback_model_dir=tiny_model("qwen2"))
    assert server.models == {}


# ----------------------------------------------------------------------------------------------
# Faults


def test_connection_refused(gguf):
    before = gguf.read_bytes()
    with OllamaClient(f"127.0.0.1:{free_port()}", timeout=2) as c:
        st = c.status()
        assert not st.reachable and "could not connect" in st.error and "ollama serve" in st.hint
        with pytest.raises(OllamaError, match="could not connect to Ollama .*connection refused"):
            send_gguf(c, gguf, "m")
    assert_kept(gguf, before)


def test_server_that_hangs_times_out_with_a_message(server, gguf):
    server.fault("version", "hang")
    t0 = time.monotonic()
    with client_for(server, timeout=0.5) as c, pytest.raises(OllamaError,
                                                             match="did not answer within"):
        send_gguf(c, gguf, "m")
    assert time.monotonic() - t0 < 5


def test_hang_mid_stream_times_out(server, gguf):
    server.fault("create", "hang_mid_stream")
    before = gguf.read_bytes()
    with client_for(server, stream_timeout=0.5) as c, pytest.raises(
            OllamaError, match="did not answer within 0.5 s while creating"):
        send_gguf(c, gguf, "m")
    assert server.models == {}
    assert_kept(gguf, before)


def test_hang_is_cancellable(server, gguf):
    server.fault("create", "hang")
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    t0 = time.monotonic()
    with client_for(server, stream_timeout=30) as c, pytest.raises(Cancelled):
        send_gguf(c, gguf, "m", cancel=cancel)
    assert time.monotonic() - t0 < 5
    assert server.models == {}


@pytest.mark.parametrize("code,endpoint,words", [
    (400, "create", "Ollama answered 400 while creating m:latest: injected 400"),
    (404, "show", "Ollama does not list m:latest after creating it"),
    (500, "create", "Ollama answered 500 while creating m:latest: injected 500"),
    (500, "blob_post", "Ollama answered 500 while uploading"),
    (404, "version", "Ollama answered 404 while asking for its version"),
])
def test_http_errors(server, gguf, code, endpoint, words):
    server.fault(endpoint, f"status:{code}")
    before = gguf.read_bytes()
    with client_for(server) as c, pytest.raises(OllamaError) as e:
        send_gguf(c, gguf, "m")
    assert server.models == {} or endpoint == "show"
    assert words in e.value.message
    assert "GGUF file is kept" in e.value.hint or endpoint == "show"
    assert_kept(gguf, before)


def test_digest_mismatch(server, gguf):
    server.fault("blob_post", "digest_mismatch")
    before = gguf.read_bytes()
    with client_for(server) as c, pytest.raises(OllamaError, match="sha256 does not match"):
        send_gguf(c, gguf, "m")
    assert server.blobs == {} and server.models == {}
    assert_kept(gguf, before)


def test_stream_cut_short(server, gguf):
    server.fault("create", "cut_short")
    with client_for(server) as c, pytest.raises(OllamaError, match="cut short") as e:
        send_gguf(c, gguf, "m")
    assert "last status: using existing layer" in e.value.message
    assert server.models == {}


def test_stream_ending_without_success(server, gguf):
    server.fault("create", "no_success")
    with client_for(server) as c, pytest.raises(OllamaError,
                                                match="ended before it reported success"):
        send_gguf(c, gguf, "m")


def test_error_line_inside_a_200_stream(server, gguf):
    server.fault("create", "error_mid_stream")
    before = gguf.read_bytes()
    with client_for(server) as c, pytest.raises(
            OllamaError, match="reported an error while creating m:latest: unsupported arch"):
        send_gguf(c, gguf, "m")
    assert server.models == {}
    assert_kept(gguf, before)


def test_bad_template_is_a_400_from_the_strict_server(server, gguf):
    # What our conversion never sends, to show the server's check is live.
    with client_for(server) as c:
        digest, _ = c.ensure_blob(gguf)
        with pytest.raises(OllamaError, match="400 .*template error: .*unclosed if"):
            c.create("m", files={gguf.name: digest}, template="{{ if .System }}x")
        with pytest.raises(OllamaError, match="400 .*unexpected {{end}}"):
            c.create("m", files={gguf.name: digest}, template="x{{ end }}")
        with pytest.raises(OllamaError, match="400 .*not found; push it first"):
            c.create("m", files={gguf.name: "sha256:" + "0" * 64}, template="x")


# ----------------------------------------------------------------------------------------------
# Hosts


@pytest.mark.parametrize("host", ["192.168.1.20:11434", "http://example.com", "10.0.0.1"])
def test_non_loopback_host_needs_allow_remote(host):
    with pytest.raises(OllamaError, match="not on this machine") as e:
        resolve_host(host)
    assert "--allow-remote" in e.value.hint
    assert resolve_host(host, allow_remote=True).startswith("http")


def test_host_from_environment(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:12345")
    assert resolve_host(None) == "http://127.0.0.1:12345"
    monkeypatch.setenv("OLLAMA_HOST", "remote.example:11434")
    with pytest.raises(OllamaError, match="not on this machine"):
        resolve_host(None)
    monkeypatch.delenv("OLLAMA_HOST")
    assert resolve_host(None) == "http://127.0.0.1:11434"
    assert resolve_host("localhost") == "http://localhost:11434"
    assert resolve_host("http://[::1]:8080") == "http://[::1]:8080"


def test_upload_is_cancellable_and_leaves_no_blob(server, tmp_path):
    big = make_gguf(tmp_path / "big.gguf", "qwen2", payload_bytes=6 << 20)
    before = big.read_bytes()
    cancel = CancelToken()
    seen = []

    def progress(done, total, message):
        seen.append(message)
        if message.startswith("uploading"):
            cancel.cancel("user pressed stop")

    with client_for(server) as c, pytest.raises(Cancelled):
        c.ensure_blob(big, progress=progress, cancel=cancel)
    assert any(m.startswith("hashing") for m in seen)
    time.sleep(0.3)
    assert server.blobs == {}  # the partial upload never became a blob
    assert_kept(big, before)


def test_old_ollama_is_refused_with_a_hint(gguf):
    with FakeOllama(version="0.3.14") as old, client_for(old) as c:
        with pytest.raises(TailorError, match="Ollama 0.3.14 .* too old") as e:
            send_gguf(c, gguf, "m")
        assert "update Ollama" in e.value.hint and old.count("POST", "/api/blobs/") == 0


def test_show_must_confirm_template_and_stops(server, gguf):
    server.fault("show", "stale")
    with client_for(server) as c, pytest.raises(OllamaError, match="shows a different template"):
        send_gguf(c, gguf, "m")


def test_delete(server, gguf):
    with client_for(server) as c:
        send_gguf(c, gguf, "gone")
        c.delete("gone")
        assert c.list_models() == []
        with pytest.raises(OllamaError, match="404 while deleting gone"):
            c.delete("gone")


def test_template_with_literal_braces_is_accepted_end_to_end(server, tmp_path):
    jinja = ("{% for m in messages %}{{ '{{' + m['role'] + '}}: ' + m['content'] + '\n' }}"
             "{% endfor %}{{ '{{assistant}}: ' }}")
    g = make_gguf(tmp_path / "braces.gguf", "qwen2", chat_template=jinja)
    with client_for(server) as c:
        r = send_gguf(c, g, "braces")
    assert r.created and r.template["verified"]
    assert "{{assistant}}: " in server.models["braces:latest"]["template"]  # inside a literal


def test_adapter_only_without_a_known_template_keeps_the_bases(server, tmp_path):
    base = make_gguf(tmp_path / "base.gguf", "qwen2")
    add_base_model(server, "qwen-base", base)
    lora = make_gguf(tmp_path / "lora.gguf", "qwen2", general_type="adapter", chat_template=None)
    rep = ListReporter()
    with client_for(server) as c:
        r = send_adapter(c, lora, "tuned", "qwen-base", fallback_model_dir=None, report=rep)
    m = server.models["tuned:latest"]
    assert r.created and m["template"] == BASE_TEMPLATE  # inherited, not replaced
    assert m["parameters"]["stop"] == ["<|im_end|>"]
    assert any("keeps the base's template" in getattr(e, "message", "") for e in rep.events)


def test_slow_upload_is_not_a_hang_while_bytes_move(server, tmp_path):
    big = make_gguf(tmp_path / "big.gguf", "qwen2", payload_bytes=8 << 20)
    server.fault("blob_post", "slow")
    import socket

    import httpx

    # Small socket buffers, so "bytes move" on the client means they reach the server.
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)])
    t0 = time.monotonic()
    with client_for(server, timeout=1.0, transport=transport) as c:
        digest, uploaded = c.ensure_blob(big)
    assert uploaded and digest in server.blobs
    assert time.monotonic() - t0 > 1.0  # longer than the timeout in total, never silent that long
