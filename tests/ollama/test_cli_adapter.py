"""`tailor ollama --adapter NAME`: export (injected here, real in the last test), verify, create.

The injected exporter writes a small GGUF and reports progress, so these tests check the
orchestration: what is asked of the export, that a failed verification stops the hand-off,
that --adapter-only is refused for architectures Ollama cannot apply adapters to before any
export work, and that the job's progress and events stay one coherent stream.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.cli import Job, _add_common
from engine.events import Finished, ListReporter, Progress, Started, TailorError
from engine.ollama import cli as ollama_cli

from tests.export.adapters import make_library_adapter
from .fake_server import add_base_model
from .ggufs import make_gguf


@dataclass
class FakeExport:
    arch: str = "qwen2"
    passed: bool = True
    calls: list = field(default_factory=list)

    def __call__(self, source, out, quant, *, adapter_only=False, verify=True, job=None):
        """export_gguf's contract: progress through ``job``, no lifecycle events of its own
        (the command runner's), the result returned (issue 13)."""
        self.calls.append({"source": source.name, "out": Path(out), "quant": quant,
                           "adapter_only": adapter_only, "verify": verify})
        job.started({"source": source.name})
        for i in range(1, 5):
            job.report(Progress(job="export", stage="export", done=i, total=4))
        make_gguf(out, self.arch, general_type="adapter" if adapter_only else "model")
        checks = [{"name": "llama.cpp loads", "passed": self.passed, "detail": ""}]

        @dataclass
        class Result:
            path: Path
            verification: dict

        return Result(Path(out), {"passed": self.passed, "checks": checks})


def run_cli(argv: list[str], export_fn) -> tuple[int, ListReporter]:
    parser = argparse.ArgumentParser()
    _add_common(parser)
    ollama_cli.configure(parser)
    args = parser.parse_args(argv)
    rep = ListReporter()
    code = ollama_cli.run(args, Job(name="ollama", report=rep), export_fn=export_fn)
    return code, rep


@pytest.fixture
def qwen_adapter(tiny_model):
    make_library_adapter("style", tiny_model("qwen2"), scale=10.0)
    return "style"


def test_adapter_is_exported_then_created(server, qwen_adapter, tailor_home, capsys):
    export = FakeExport()
    code, rep = run_cli(["--adapter", qwen_adapter, "--name", "style", "--quant", "q4_k_m",
                         "--host", server.host, "--quiet"], export)
    assert code == 0
    call = export.calls[0]
    assert call["quant"] == "q4_k_m" and not call["adapter_only"] and call["verify"]
    assert call["out"] == tailor_home / "exports" / "style" / "style-q4_k_m.gguf"
    m = server.models["style:latest"]
    assert m["quantize"] is None  # the export quantized; Ollama is not asked to again
    assert "<|im_end|>" in m["parameters"]["stop"]
    progress = [e.done / e.total for e in rep.of(Progress)]
    assert progress[:4] == [0.15, 0.3, 0.45, 0.6]  # the export fills the first 60 % of the bar
    assert min(progress[4:]) >= 0.6 and progress[-1] == 1.0  # upload and create the rest
    assert len(rep.of(Finished)) == 1  # the hand-off's only: the nested export has none
    assert len(rep.of(Started)) == 1  # and its start is a log line of this job
    # A second hand-off never overwrites the first export.
    run_cli(["--adapter", qwen_adapter, "--name", "style:v2", "--quant", "q4_k_m",
             "--host", server.host], export)
    assert export.calls[1]["out"].name == "style-q4_k_m-2.gguf"
    assert call["out"].exists()


def test_failed_verification_is_not_sent(server, qwen_adapter):
    with pytest.raises(TailorError, match="failed verification") as e:
        run_cli(["--adapter", qwen_adapter, "--name", "style", "--host", server.host],
                FakeExport(passed=False))
    assert "llama.cpp loads" in e.value.message
    assert server.count("POST", "/api/blobs/") == 0 and server.models == {}


def test_adapter_only_needs_base_and_a_supported_architecture(server, tiny_model, tmp_path):
    make_library_adapter("q3", tiny_model("qwen3"), scale=10.0)
    export = FakeExport(arch="qwen3")
    with pytest.raises(TailorError, match="cannot apply a LoRA adapter to a qwen3") as e:
        run_cli(["--adapter", "q3", "--adapter-only", "--base", "qwen3:0.6b", "--name", "x",
                 "--host", server.host], export)
    assert "fuses the adapter" in e.value.hint
    assert export.calls == []  # refused before any export work
    with pytest.raises(TailorError, match="needs --base"):
        run_cli(["--adapter", "q3", "--adapter-only", "--name", "x", "--host", server.host],
                export)


def test_adapter_only_on_a_base_in_ollama(server, qwen_adapter, tmp_path):
    add_base_model(server, "qwen-base:f16", make_gguf(tmp_path / "base.gguf", "qwen2"))
    export = FakeExport()
    code, _ = run_cli(["--adapter", qwen_adapter, "--adapter-only", "--base", "qwen-base:f16",
                       "--name", "style-lora", "--host", server.host], export)
    assert code == 0 and export.calls[0]["adapter_only"]
    m = server.models["style-lora:latest"]
    assert m["from"] == "qwen-base:f16" and list(m["adapters"]) == ["style-lora.gguf"]


@pytest.mark.slow
def test_adapter_end_to_end_with_the_real_export(server, qwen_adapter, capsys):
    """Fuse + export + llama.cpp verification (engine.export), then create and confirm."""
    try:
        from engine.ollama.cli import load_export_gguf

        export_gguf = load_export_gguf()
    except ImportError as e:
        pytest.fail(f"engine.export.export_gguf is not available yet ({e}): the one-step "
                    "--adapter hand-off cannot run without the export engineer's writer")
    code, rep = run_cli(["--adapter", qwen_adapter, "--name", "style", "--quant", "q8_0",
                         "--host", server.host], export_gguf)
    assert code == 0
    result = rep.of(Finished)[-1].result
    assert result.created and result.template["family"] == "chatml"
    assert result.template["verified"]
    assert "<|im_end|>" in server.models["style:latest"]["parameters"]["stop"]


@pytest.mark.slow
def test_adapter_only_with_the_real_export(server, qwen_adapter, tiny_model, tmp_path):
    """A LoRA GGUF from engine.export on top of a base model already in Ollama."""
    from engine.ollama.cli import load_export_gguf

    export_gguf = load_export_gguf()
    base = export_gguf(tiny_model("qwen2"), tmp_path / "base-f16.gguf", "f16", verify=False)
    add_base_model(server, "tiny-qwen:f16", base.path)
    code, rep = run_cli(["--adapter", qwen_adapter, "--adapter-only", "--base", "tiny-qwen:f16",
                         "--name", "style-lora", "--host", server.host], export_gguf)
    assert code == 0
    m = server.models["style-lora:latest"]
    assert m["from"] == "tiny-qwen:f16" and list(m["adapters"]) == ["style-lora.gguf"]
    adapter_blob = server.blobs[m["adapters"]["style-lora.gguf"]]
    assert b"adapter" in adapter_blob[:4096]  # general.type = adapter
    assert "<|im_end|>" in m["parameters"]["stop"]
