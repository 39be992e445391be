"""Every write site under every write fault (issue 11): a full disk, a read-only folder, a
permission-denied folder and a second Ctrl-C mid-write end with exit 1 (130 when interrupted),
a message naming the path and the reason on stderr, no traceback, no temporary left behind,
and every input and earlier artifact byte for byte unchanged.

A new write site gets the same coverage by adding one line to ``SITES``.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from engine.cli import main
from tests.conftest import snapshot_tree
from tests.faults import EXIT, FAULTS, REASON, leftover_temporaries, write_faults


@dataclass
class Setup:
    home: Path       # TAILOR_HOME: the finished adapter "base" (with a checkpoint), its copy "other"
    model: Path      # the tiny base model
    data: Path       # the dataset it was trained on
    gguf: Path       # a small GGUF file of the user's
    out: Path        # an empty output folder

    @property
    def adapters(self) -> Path:
        return self.home / "adapters"


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_model):
    from engine.train.config import make_config
    from engine.train.run import train_adapter
    from tests.ollama.ggufs import make_gguf
    from tests.train.conftest import write_toy_chat

    root = tmp_path_factory.mktemp("write-sites")
    user = root / "user-files"
    user.mkdir()
    data = write_toy_chat(user / "toy.jsonl", n=16)
    model = tiny_model("qwen2")
    cfg = make_config(iters=2, batch_size=2, save_every=1, eval_every=0, rank=4)
    train_adapter(str(model), data, "base", cfg, library_dir=root / "home" / "adapters")
    from engine.library import duplicate_adapter
    duplicate_adapter("base", "other", root / "home" / "adapters")  # a second parent to merge
    make_gguf(user / "mine-f16.gguf", "qwen2")
    return root, model, data, user / "mine-f16.gguf"


@pytest.fixture
def setup(template, tailor_home, tmp_path) -> Setup:
    root, model, data, gguf = template
    shutil.copytree(root / "home" / "adapters", tailor_home / "adapters")
    out = tmp_path / "out"
    out.mkdir()
    return Setup(tailor_home, model, data, gguf, out)


@dataclass
class Site:
    argv: Callable[[Setup], list[str]]
    folder: Callable[[Setup], Path]  # where the writes fail
    faults: tuple[str, ...] = FAULTS  # those that can strike there (a delete writes no bytes)
    after_bytes: int = 64  # bytes written there before a full disk / the Ctrl-C
    names: str | None = None  # only entries with names matching this glob
    own: tuple[str, ...] = ()  # library entries the job may still update (its manifest)


def _train(s: Setup) -> list[str]:
    return ["train", "--model", str(s.model), "--data", str(s.data), "--name", "fresh",
            "--iters", "2", "--batch-size", "2", "--eval-every", "0", "--save-every", "1",
            "--rank", "4"]


SITES = {
    "train": Site(_train, lambda s: s.adapters, own=("fresh/",)),
    "train checkpoint": Site(_train, lambda s: s.adapters / "fresh" / "checkpoints",
                             own=("fresh/",)),
    "train adapter file": Site(_train, lambda s: s.adapters / "fresh",
                               names=".adapters.safetensors.tmp-*", own=("fresh/",)),
    "train --resume": Site(lambda s: ["train", "--resume", "base"], lambda s: s.adapters,
                           own=("base/manifest.json",)),
    "library rename": Site(lambda s: ["library", "rename", "base", "renamed"],
                           lambda s: s.adapters),
    "library delete": Site(lambda s: ["library", "delete", "base"], lambda s: s.adapters,
                           faults=("read-only", "permission-denied")),
    "library duplicate": Site(lambda s: ["library", "duplicate", "base", "copy"],
                              lambda s: s.adapters),
    "fuse": Site(lambda s: ["fuse", "--adapter", "base", "--out", str(s.out / "fused")],
                 lambda s: s.out),
    "export": Site(lambda s: ["export", "--adapter", "base", "--out", str(s.out / "base.gguf"),
                              "--no-verify"], lambda s: s.out),
    "export --imatrix auto": Site(lambda s: ["export", "--adapter", "base", "--quant", "q2_k",
                                             "--imatrix", "auto", "--imatrix-ctx", "32",
                                             "--out", str(s.out / "base.gguf"), "--no-verify"],
                                  lambda s: s.out, names=".base.imatrix.gguf.tmp-*"),
    "export --adapter-only": Site(lambda s: ["export", "--adapter", "base", "--adapter-only",
                                             "--out", str(s.out / "lora.gguf"), "--no-verify"],
                                  lambda s: s.out),
    "ollama --offline": Site(lambda s: ["ollama", "--gguf", str(s.gguf), "--name", "mine",
                                        "--offline", "--modelfile-dir", str(s.out / "mf")],
                             lambda s: s.out),
    "export --format peft": Site(lambda s: ["export", "--adapter", "base", "--format", "peft",
                                            "--out", str(s.out / "peft")], lambda s: s.out),
    "eval report": Site(lambda s: ["eval", "--adapter", "base", "--no-probe", "--limit", "2",
                                   "--max-tokens", "4"], lambda s: s.adapters / "base"),
    "merge": Site(lambda s: ["merge", "base", "other", "--method", "concat", "--name", "both"],
                  lambda s: s.adapters),
    "merge --fuse": Site(lambda s: ["merge", "base", "other", "--method", "concat", "--name",
                                    "both", "--fuse", str(s.out / "merged")], lambda s: s.out),
    "data check --events FILE": Site(lambda s: ["data", "check", str(s.data), "--model",
                                                str(s.model), "--events",
                                                str(s.out / "events.jsonl")],
                                     lambda s: s.out, after_bytes=200),
}
CASES = [(site, fault) for site, spec in SITES.items() for fault in spec.faults]


def _inputs(s: Setup) -> dict:
    return {"model": snapshot_tree(s.model), "data": s.data.read_bytes(),
            "gguf": s.gguf.read_bytes()}


@pytest.mark.parametrize("site, fault", CASES)
def test_write_site_under_fault(site, fault, setup, capsys):
    spec = SITES[site]
    folder = spec.folder(setup)
    inputs, library = _inputs(setup), snapshot_tree(setup.adapters)
    with write_faults(folder, fault, spec.after_bytes, spec.names) as injected:
        rc = main(spec.argv(setup))
    err = capsys.readouterr().err
    print(f"{site} / {fault}: exit {rc}\n{err}")  # shown by pytest -rA
    assert injected.fired, f"{site} wrote nothing under {folder}"
    assert "Traceback" not in err
    assert rc == EXIT[fault], err
    assert REASON[fault] in err
    if fault != "interrupted":
        assert f"cannot write {folder}" in err or f"cannot delete {folder}" in err \
            or f"cannot rename {folder}" in err or f"in {folder}" in err, err
    assert leftover_temporaries(setup.home, setup.out) == []
    assert _inputs(setup) == inputs
    after = snapshot_tree(setup.adapters)
    if spec.own:  # a run records its failure in its own manifest; nothing else changes
        after = {k: v for k, v in after.items() if not k.startswith(spec.own)}
        library = {k: v for k, v in library.items() if not k.startswith(spec.own)}
    assert after == library


# Every command a user runs, with the whole library (TAILOR_HOME) and the output folder faulty.
COMMANDS = {
    "data check": lambda s: ["data", "check", str(s.data), "--model", str(s.model)],
    "train": _train,
    "train --resume": lambda s: ["train", "--resume", "base"],
    "library rename": lambda s: ["library", "rename", "base", "renamed"],
    "library delete": lambda s: ["library", "delete", "base"],
    "generate": lambda s: ["generate", "--adapter", "base", "--prompt", "hi", "--max-tokens", "2"],
    "fuse": lambda s: ["fuse", "--adapter", "base", "--out", str(s.out / "fused")],
    "export": lambda s: ["export", "--adapter", "base", "--out", str(s.out / "base.gguf"),
                         "--no-verify"],
    "ollama --offline": lambda s: ["ollama", "--gguf", str(s.gguf), "--name", "mine",
                                   "--offline", "--modelfile-dir", str(s.out / "mf")],
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_traceback_reaches_the_user(command, fault, setup, capsys):
    inputs = _inputs(setup)
    with write_faults(setup.home, fault), write_faults(setup.out, fault):
        rc = main(COMMANDS[command](setup))
    err = capsys.readouterr().err
    print(f"{command} / {fault}: exit {rc}\n{err}")  # shown by pytest -rA
    assert "Traceback" not in err and "internal error" not in err, err
    assert rc in (0, EXIT[fault]), err
    if rc:
        assert REASON[fault] in err
    assert _inputs(setup) == inputs
    assert leftover_temporaries(setup.home, setup.out) == []
