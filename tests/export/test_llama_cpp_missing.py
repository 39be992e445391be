"""An install where llama.cpp cannot be imported (llama-cpp-python is a runtime dependency,
so a broken install or a frozen app without it) does not call its export verified on the
structure checks alone: before, it printed "verification: PASSED" and the file went on to
Ollama, LM Studio and the Hub as verified. Now a "llama.cpp load" check says why and how."""
from __future__ import annotations

import sys

from engine.cli import main
from engine.export.gguf_export import export_gguf
from engine.export.verify import format_verification

from .adapters import make_library_adapter


def test_an_export_without_llama_cpp_is_not_called_verified(tiny_model, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` -> ImportError
    make_library_adapter("pip", tiny_model("qwen2"))
    result = export_gguf("pip", tmp_path / "pip.gguf", "q8_0")
    assert not result.verified
    load = [c for c in result.checks if c.name == "llama.cpp load"]
    assert len(load) == 1 and load[0].passed is None
    assert load[0].detail == ("not verified: llama.cpp is not installed (pip install "
                              "llama-cpp-python, or reinstall Tailor: it is a dependency)")
    assert all(c.passed for c in result.checks if c.passed is not None)  # the file is fine
    text = format_verification(result.verification)
    assert text.splitlines()[0] == "verification: NOT DONE"
    # the command line says so too: the file is written, the exit status is a verification's
    # that did not pass (1), as a script or the self-test must see
    assert main(["export", "--adapter", "pip", "--quant", "q8_0",
                 "--out", str(tmp_path / "cli.gguf")]) == 1
    assert (tmp_path / "cli.gguf").is_file()
    out = capsys.readouterr()
    assert "verification: NOT DONE" in out.out + out.err
    assert "not verified: llama.cpp is not installed (pip install llama-cpp-python" in \
        out.out + out.err
