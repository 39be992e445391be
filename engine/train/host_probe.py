"""What a host of a distributed run answers over ssh, and how a dataset copy lands there.

This file runs in two places: imported here (this machine's own facts, a rank finding its
dataset), and sent as its own source text to each remote host (``python -c SOURCE facts ...``,
engine/train/hosts.py), so both sides hash and name files with the same code. Hence stdlib
only at import; Tailor and MLX are imported inside, where their absence is itself an answer.

Copies are content-addressed: ``<TAILOR_HOME>/cache/datasets/<sha256><suffix>`` on the host,
written under a temporary name and renamed once its sha256 is verified, so nothing of the
user's on that host is ever written over.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import uuid


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copies_dir() -> str:
    """Where this host keeps dataset copies (in Tailor's own folder; created on first copy)."""
    try:
        from engine.paths import tailor_home

        return os.path.join(str(tailor_home()), "cache", "datasets")
    except Exception:  # no Tailor here: the version check says so first
        return ""


def copy_path(sha: str, suffix: str) -> str:
    folder = copies_dir()
    return os.path.join(folder, sha + suffix) if folder and sha else ""


def facts(model: str, data: str, sha: str = "", suffix: str = "") -> dict:
    """Versions, this host's name, whether the model folder and the dataset are at these
    paths (the dataset as its sha256, True for a folder, None when missing), and the path of
    an earlier verified copy of the dataset ``sha`` (None: there is none)."""
    out: dict = {"python": sys.executable, "node": platform.node()}
    try:
        import engine

        out["tailor"] = engine.__version__
    except Exception:
        out["tailor"] = None
    try:
        import mlx.core as mx

        out["mlx"] = mx.__version__
    except Exception:
        out["mlx"] = None
    out["model"] = _has_model(model)
    out["data"] = sha256_of(data) if os.path.isfile(data) else (os.path.isdir(data) or None)
    cached = copy_path(sha, suffix)
    out["copies"] = copies_dir()
    out["copy"] = cached if cached and os.path.isfile(cached) and sha256_of(cached) == sha \
        else None
    return out


HUB_PREFIX = "hf:"  # a model given as a Hugging Face repo id: looked for in the hub cache


def _has_model(model: str) -> bool:
    if not model.startswith(HUB_PREFIX):
        return os.path.isfile(os.path.join(model, "config.json"))
    try:  # only the local cache: a check never downloads
        from huggingface_hub import snapshot_download

        folder = snapshot_download(model[len(HUB_PREFIX):], local_files_only=True)
        return os.path.isfile(os.path.join(folder, "config.json"))
    except Exception:
        return False


def receive(sha: str, suffix: str, size: int, stream=None) -> dict:
    """Read ``size`` bytes from ``stream`` (stdin) into a temporary file in the copies folder,
    check its sha256 is ``sha``, and rename it to ``<sha><suffix>``; -> {"path", "bytes"} or
    {"error"} (the temporary removed)."""
    stream = stream or sys.stdin.buffer
    final = copy_path(sha, suffix)
    if not final:
        return {"error": "Tailor is not installed here (no library folder)"}
    folder = os.path.dirname(final)
    tmp = os.path.join(folder, f".{sha}{suffix}.tmp-{uuid.uuid4().hex[:8]}")
    h, n = hashlib.sha256(), 0
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale(folder, f".{sha}{suffix}.tmp-")
        with open(tmp, "wb") as f:
            for block in iter(lambda: stream.read(1 << 20), b""):
                f.write(block)
                h.update(block)
                n += len(block)
            f.flush()
            os.fsync(f.fileno())
        if n != size or h.hexdigest() != sha:
            os.unlink(tmp)
            return {"error": f"the copy arrived with {n} of {size} bytes, sha256 "
                             f"{h.hexdigest()[:12]}… instead of {sha[:12]}…; it was removed"}
        os.replace(tmp, final)  # the name is the content: an earlier copy is the same bytes
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        return {"error": f"cannot write {e.filename or folder}: {e.strerror or e}"}
    return {"path": final, "bytes": n}


def _remove_stale(folder: str, prefix: str, age_s: float = 3600.0) -> None:
    """An earlier copy of the same dataset cut off (its sender killed, the host asleep)."""
    import time

    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(prefix) and time.time() - os.path.getmtime(path) > age_s:
            os.unlink(path)


def main(argv: list[str]) -> int:
    if argv[:1] == ["facts"]:
        print(json.dumps(facts(*argv[1:5])))
        return 0
    if argv[:1] == ["receive"]:
        answer = receive(argv[1], argv[2], int(argv[3]))
        print(json.dumps(answer))
        return 1 if "error" in answer else 0
    print(json.dumps({"error": f"unknown request {argv[:1]}"}))
    return 2


if __name__ == "__main__":  # sent as `python -c SOURCE facts|receive ...`
    sys.exit(main(sys.argv[1:]))
