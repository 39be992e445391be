"""The training process loads what training needs and nothing else (issue 18: its resident
memory was above mlx-lm's on the same run): no GGUF writer, llama.cpp, Ollama client, HTTP stack
or Qt, neither when the command is imported nor after a whole run."""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO, write_toy_chat

# Modules a training run never needs. (transformers comes with the tokenizer, and with it
# huggingface_hub, so those are checked at import time only.)
NEVER = ("PySide6", "app", "gguf", "llama_cpp", "engine.export", "engine.ollama", "engine.fuse",
         "engine.demo", "engine.library_cli", "requests", "urllib3", "torch")
NOT_AT_IMPORT = NEVER + ("transformers", "huggingface_hub", "httpx", "mlx_lm", "tokenizers",
                         "engine.generate")


def _loaded(modules: list[str], names) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def _modules_after(code: str, env: dict | None = None, timeout: float = 240) -> list[str]:
    """sys.modules of a fresh interpreter that ran ``code`` (printed at exit, whatever the exit
    status, on the last line of stderr)."""
    probe = ("import atexit, json, sys; atexit.register(lambda: print('MODULES ' + "
             "json.dumps(sorted(sys.modules)), file=sys.stderr, flush=True))\n" + code)
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, env=env)
    lines = [line for line in r.stderr.splitlines() if line.startswith("MODULES ")]
    assert lines, r.stderr[-3000:]
    return json.loads(lines[-1][len("MODULES "):])


def test_importing_the_train_command_loads_no_model_tokenizer_http_or_export_code():
    mods = _modules_after("import engine.cli\nfrom engine.train import cli, run, loop")
    assert "engine.train.run" in mods
    assert _loaded(mods, NOT_AT_IMPORT) == []


def test_a_whole_training_run_loads_no_export_ollama_http_or_qt_code(tiny_model, tmp_path):
    import os

    data = write_toy_chat(tmp_path / "toy.jsonl", n=16)
    argv = ["engine", "train", "--model", str(tiny_model("qwen2")), "--data", str(data),
            "--name", "lean", "--iters", "2", "--batch-size", "2", "--quiet"]
    mods = _modules_after(f"import runpy, sys\nsys.argv = {argv!r}\n"
                          "runpy.run_module('engine', run_name='__main__', alter_sys=True)",
                          env={**os.environ, "TAILOR_HOME": str(tmp_path / "home")})
    assert "engine.train.loop" in mods and "mlx_lm" in mods  # it really trained
    assert (tmp_path / "home" / "adapters" / "lean" / "adapters.safetensors").exists()
    assert _loaded(mods, NEVER) == []


def test_training_bounds_mlxs_buffer_cache_and_restores_the_callers_limit(tiny_model, tmp_path):
    """Freed buffers of many batch shapes stayed cached beside the live ones (peak resident
    memory 463 MB against 432 MB without a cache on bench/train_vs_mlx_lm.py's long mix)."""
    import mlx.core as mx

    from engine.events import Step
    from engine.train.config import make_config
    from engine.train.loop import TRAIN_CACHE_LIMIT
    from engine.train.run import train_adapter

    def read_limit() -> int:
        limit = mx.set_cache_limit(0)
        mx.set_cache_limit(limit)
        return limit

    seen = []
    before = mx.set_cache_limit(1 << 40)
    try:
        train_adapter(str(tiny_model("qwen2")), write_toy_chat(tmp_path / "toy.jsonl", n=16),
                      "bounded", make_config(iters=2, batch_size=2),
                      report=lambda e: seen.append(read_limit()) if isinstance(e, Step) else None)
        assert seen == [TRAIN_CACHE_LIMIT] * 2
        assert read_limit() == 1 << 40  # the caller's own limit is back
    finally:
        mx.set_cache_limit(before)
