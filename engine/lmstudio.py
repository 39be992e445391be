"""`tailor lmstudio --gguf FILE` (and `tailor export ... --lmstudio`): put a GGUF where LM Studio
finds it, ``<models folder>/<publisher>/<model>/<file>.gguf``, as a hard link where the disk
allows (no second copy of a multi-GB file), else a copy; or through `lms import` when LM Studio's
command is on PATH. The user's file is never moved or changed, and nothing is overwritten.

Where LM Studio looks, as its `lms` command resolves it (lms-common-server findLMStudioHome and
lms's import command): the home is the path in ``~/.lmstudio-home-pointer``, else
``~/.cache/lm-studio`` when it exists, else ``~/.lmstudio``; the models folder is the
``downloadsFolder`` of ``<home>/settings.json`` (the folder chosen in LM Studio's My Models
settings), else ``<home>/models``.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .atomic import sha256_file, temp_sibling, translate_write_faults
from .events import Job, TailorError
from .results import LMStudioPlacement

POINTER = ".lmstudio-home-pointer"
DEFAULT_PUBLISHER = "tailor"
_BAD_CHARS = re.compile(r'[/<>:"\\|?*\x00-\x1f]')  # LM Studio refuses these in folder names


def lmstudio_home(home: Path | None = None) -> Path:
    """LM Studio's home folder for the user whose home folder is ``home`` (default ~)."""
    home = Path(home or Path.home())
    pointer = home / POINTER
    with contextlib.suppress(OSError, UnicodeDecodeError):
        target = pointer.read_text(encoding="utf-8").strip()
        if target:
            return (home / target) if not os.path.isabs(target) else Path(target)
    legacy = home / ".cache" / "lm-studio"
    return legacy if legacy.is_dir() else home / ".lmstudio"


def models_folder(home: Path | None = None) -> tuple[Path, str]:
    """(the folder LM Studio reads models from, where that came from)."""
    lm_home = lmstudio_home(home)
    settings = lm_home / "settings.json"
    try:
        folder = json.loads(settings.read_text(encoding="utf-8")).get("downloadsFolder")
    except (OSError, ValueError, AttributeError):
        folder = None
    if isinstance(folder, str) and folder.strip():
        return Path(folder).expanduser(), f"downloadsFolder in {settings}"
    return lm_home / "models", "LM Studio's default"


def folder_name(value: str, what: str) -> str:
    """``value`` as a folder name LM Studio accepts (its own rules: no / < > : " \\ | ? *, no
    leading or trailing dot or space, at most 100 characters)."""
    cleaned = _BAD_CHARS.sub("-", value).strip(" .")[:100].strip(" .")
    if not cleaned:
        raise TailorError(f"the LM Studio {what} name {value!r} is empty once cleaned",
                          hint=f"give a {what} name with letters or digits")
    return cleaned


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or (a.stat().st_size == b.stat().st_size
                                           and sha256_file(a) == sha256_file(b))
    except OSError:
        return False


def choose_target(models: Path, publisher: str, model: str, gguf: Path) -> tuple[Path, bool]:
    """(where the file goes, True when that very file is already there). A different file of
    the same name keeps its place: the model folder gets -2, -3... instead."""
    for n in range(1, 1000):
        folder = models / publisher / (model if n == 1 else f"{model}-{n}")
        target = folder / gguf.name
        if not os.path.lexists(target):
            return target, False
        if _same_file(gguf, target):
            return target, True
    raise TailorError(f"{models / publisher} has 999 folders named {model}-N holding a "
                      f"different {gguf.name}", hint="choose another --model name")


def _link_or_copy(gguf: Path, target: Path, job: Job) -> str:
    """Hard link (instant, no space), else copy to a temporary and link it in; never replaces
    a file (a link fails when the name is taken). Returns how."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(gguf, target)
        return "hard link"
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise TailorError(f"{target} appeared while placing the file; it was left "
                              "untouched", hint="run it again") from e
        job.log(f"a hard link is not possible here ({e.strerror}); copying instead")
    tmp = temp_sibling(target)
    try:
        with translate_write_faults(target, needed_bytes=gguf.stat().st_size, written=tmp):
            shutil.copyfile(gguf, tmp)
            try:
                os.link(tmp, target)  # atomic and never over an existing name
            except OSError as e:
                if e.errno == errno.EEXIST:
                    raise TailorError(f"{target} appeared while copying; it was left "
                                      "untouched", hint="run it again") from e
                if os.path.lexists(target):
                    raise
                os.rename(tmp, target)  # a file system without links (exFAT)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return "copy"


@contextlib.contextmanager
def _placing(target: Path, job: Job):
    """Hold the target's output lock while placing it, and first remove what a killed copy to
    that very target left (``.NAME.gguf.tmp-XXXXXXXX``, the size of the model): under the
    lock no live job can own it, whatever its age (engine/sweep.py)."""
    from . import locks, sweep

    with locks.output_lock(target, job.name):
        sweep.report_removed(sweep.sweep_output_folder(target, held=True), job.report,
                             job.name)
        yield


def _lms_import(lms: str, gguf: Path, target: Path, publisher: str, job: Job) -> str:
    """`lms import` with a hard link (then a copy), into the folder chosen for it."""
    repo = f"{publisher}/{target.parent.name}"
    for how, flag in (("hard link", "--hard-link"), ("copy", "--copy")):
        done = subprocess.run([lms, "import", str(gguf), "--yes", flag, "--user-repo", repo],
                              capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
        if done.returncode == 0 and target.exists():
            return f"lms import ({how})"
        job.log(f"lms import {flag} failed: {(done.stderr or done.stdout).strip()[-300:]}",
                level="warning")
    raise TailorError(f"`lms import` could not place {gguf} in {target.parent}",
                      hint="see the log lines above; or put it there with `tailor lmstudio "
                           "--no-lms`")


def place_in_lmstudio(gguf: Path | str, *, model: str | None = None,
                      publisher: str = DEFAULT_PUBLISHER, use_lms: bool = True,
                      job: Job, home: Path | None = None) -> LMStudioPlacement:
    """Put ``gguf`` in LM Studio's models folder as ``<publisher>/<model>/<file>``; returns
    where and how. Raises TailorError for a missing file or a folder that refuses the write."""
    gguf = Path(gguf).expanduser().resolve()
    if not gguf.exists():
        raise TailorError(f"GGUF file not found: {gguf}", hint="check the path; tailor export "
                          "prints where it wrote the file")
    if not gguf.is_file() or gguf.suffix.lower() != ".gguf":
        raise TailorError(f"{gguf} is not a .gguf file", hint="give the GGUF that tailor "
                          "export wrote")
    publisher = folder_name(publisher, "publisher")
    model = folder_name(model or gguf.stem, "model")
    models, source = models_folder(home)
    target, present = choose_target(models, publisher, model, gguf)
    job.started({"gguf": str(gguf), "lmstudio": str(target)}, {"models_folder": str(models)})
    lms = shutil.which("lms") if use_lms else None
    if present:
        how = "already there"
    else:
        with _placing(target, job):
            how = (_lms_import(lms, gguf, target, publisher, job) if lms
                   else _link_or_copy(gguf, target, job))
    return LMStudioPlacement(path=str(target), source=str(gguf), models_folder=str(models),
                             models_folder_from=source, model_key=f"{publisher}/"
                             f"{target.parent.name}", method=how,
                             renamed=target.parent.name != model)


def describe(placed: LMStudioPlacement) -> str:
    return (f"LM Studio: {placed.path} ({placed.method}; models folder {placed.models_folder}, "
            f"{placed.models_folder_from}); it is listed in My Models as {placed.model_key}"
            + (" (a different file had the name: a new folder was used)" if placed.renamed
               else ""))


# ----------------------------------------------------------------------------------------------
# `tailor lmstudio`

def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gguf", required=True, help="the GGUF file to put in LM Studio (kept "
                   "where it is: a hard link, or a copy)")
    p.add_argument("--model", default=None, help="the model folder name in LM Studio "
                   "(default: the file's name)")
    p.add_argument("--publisher", default=DEFAULT_PUBLISHER,
                   help=f"the publisher folder (default {DEFAULT_PUBLISHER})")
    p.add_argument("--no-lms", action="store_true",
                   help="place the file directly even when LM Studio's `lms` is on PATH")


def run(args: argparse.Namespace, job: Job) -> int:
    from .events import Finished

    placed = place_in_lmstudio(args.gguf, model=args.model, publisher=args.publisher,
                               use_lms=not args.no_lms, job=job)
    job.report(Finished(job=job.name, result=placed))
    print(describe(placed), file=sys.stderr if args.events == "-" else sys.stdout)
    return 0
