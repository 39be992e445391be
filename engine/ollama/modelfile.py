"""A ready folder for people without a running Ollama (and for LM Studio and llama.cpp users):
the GGUF (hard-linked or copied, never moved), a ``Modelfile`` and a ``README.txt`` with the one
command to run.

Modelfile syntax (ollama ``parser/parser.go``): ``INSTRUCTION value`` per line; a value is
trimmed, then unquoted from one or three double quotes (three may span lines). There is no
escaping, so a value containing three double quotes in a row cannot be written: we refuse it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, check_free_space
from ..events import TailorError

MODELFILE = "Modelfile"
README = "README.txt"


@dataclass
class ModelfileSpec:
    """What goes into a Modelfile. ``from_`` is a file name in the folder or an Ollama model."""

    from_: str
    template: str | None = None
    stops: list[str] = field(default_factory=list)
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # temperature, num_ctx, ...
    adapter: str | None = None

    def render(self, name: str = "") -> str:
        lines = ["# Modelfile written by Tailor" + (f" for {name}" if name else ""),
                 f"# Import it with: ollama create {name or 'MODEL-NAME'} -f Modelfile", ""]
        lines.append(f"FROM {_value(self.from_, 'FROM')}")
        if self.adapter:
            lines.append(f"ADAPTER {_value(self.adapter, 'ADAPTER')}")
        if self.template is not None:
            lines.append(f'TEMPLATE {_triple(self.template, "TEMPLATE")}')
        for stop in self.stops:
            lines.append(f"PARAMETER stop {_quoted(stop, 'PARAMETER stop')}")
        for key, val in self.parameters.items():
            if val is None:
                continue
            lines.append(f"PARAMETER {key} {_quoted(str(val), 'PARAMETER ' + key)}")
        if self.system:
            lines.append(f'SYSTEM {_triple(self.system, "SYSTEM")}')
        return "\n".join(lines) + "\n"


def _triple(text: str, what: str) -> str:
    if '"""' in text:
        raise TailorError(f'the {what} text contains """, which a Modelfile cannot hold',
                          hint="remove the triple quotes from it")
    return f'"""{text}"""'


def _quoted(text: str, what: str) -> str:
    if "\n" in text or '"' in text:
        return _triple(text, what)
    return f'"{text}"'


def _value(text: str, what: str) -> str:
    if "\n" in text:
        raise TailorError(f"the {what} value {text!r} contains a line break")
    return _quoted(text, what) if (" " in text or '"' in text) else text


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst`` (same disk, no extra space), else copy. Never moves."""
    try:
        os.link(src, dst)
        return "hard link"
    except OSError:
        check_free_space(dst.parent, src.stat().st_size, what=f"a copy of {src.name}")
        shutil.copy2(src, dst)
        return "copy"


def readme_text(name: str, gguf_name: str, *, adapter_only: bool = False,
                template_family: str = "", verified: bool = True,
                create_command: str = "") -> str:
    import shlex

    arg = shlex.quote(gguf_name)  # a file name with spaces still pastes as one argument
    check = "" if verified else (
        "\nNote: Tailor could not check that the TEMPLATE reproduces the model's own chat "
        "template exactly; try a short chat before relying on it.\n")
    lms = ("" if adapter_only else f"""
LM Studio
  Copy or link {gguf_name} into LM Studio's models folder
  (~/.lmstudio/models/<publisher>/<model>/{gguf_name}), or run: lms import {arg}
  LM Studio reads the chat template stored inside the GGUF.

llama.cpp
  llama-cli -m {arg} -cnv
  (chat mode uses the chat template stored inside the GGUF)
  llama-server -m {arg}    # OpenAI-compatible server on http://127.0.0.1:8080
""")
    return f"""Made by Tailor: {name}

Ollama
  In this folder, run:

    {create_command or f"ollama create {name}"} -f Modelfile

  then try it:

    ollama run {name} "Hello!"

  The Modelfile sets the chat template ({template_family or 'from the model'}) and the stop
  tokens, so the model uses its roles and stops after its answer.
{check}{lms}"""


# Every folder this module writes carries this marker; ``--replace`` (and rewriting without it)
# is allowed only for a folder whose marker lists exactly the files in it, unchanged.
MARKER = ".tailor-modelfile.json"
MARKER_KIND = "tailor-modelfile-folder"
MARKER_SCHEMA = 1
_MARKER_MAX_BYTES = 64 * 1024
_SAMPLE_BYTES = 1 << 20  # a GGUF is fingerprinted by its size and first and last MiB


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _gguf_sample(path: Path) -> str:
    """sha256 of a GGUF's first and last MiB: enough to tell our link or copy from another file
    of the same name, without reading gigabytes."""
    import hashlib

    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        h.update(f.read(_SAMPLE_BYTES))
        if size > _SAMPLE_BYTES:
            f.seek(max(_SAMPLE_BYTES, size - _SAMPLE_BYTES))
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


def _file_record(path: Path) -> dict:
    if path.name.endswith(".gguf"):
        return {"size": path.stat().st_size, "sample_sha256": _gguf_sample(path)}
    data = path.read_bytes()
    return {"size": len(data), "sha256": _sha256_bytes(data)}


def _marker(name: str, folder: Path) -> dict:
    files = {p.name: _file_record(p) for p in sorted(folder.iterdir()) if p.name != MARKER}
    return {"kind": MARKER_KIND, "schema": MARKER_SCHEMA, "model": name, "files": files}


def tailor_folder_problem(folder: Path) -> str:
    """Why ``folder`` is not a Modelfile folder Tailor wrote and nobody changed since ('' when
    it is): its marker must list exactly the files there (Modelfile, README.txt, GGUFs), each a
    plain file with the recorded size and hash."""
    import json
    import stat

    marker = folder / MARKER
    try:
        st = marker.lstat()
    except OSError:
        return f"has no {MARKER} (the marker Tailor writes into every Modelfile folder)"
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MARKER_MAX_BYTES:
        return f"has a {MARKER} that is not a small plain file"
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"has an unreadable {MARKER} ({e})"
    if not (isinstance(record, dict) and record.get("kind") == MARKER_KIND
            and record.get("schema") == MARKER_SCHEMA and isinstance(record.get("model"), str)
            and isinstance(record.get("files"), dict)):
        return f"has a {MARKER} without Tailor's kind, schema, model name and file list"
    files: dict = record["files"]
    try:
        present = {p.name for p in folder.iterdir()} - {MARKER}
    except OSError as e:
        return f"cannot be listed ({e})"
    extra = sorted(present - set(files))
    if extra:
        return (f"holds files Tailor did not write there ({', '.join(extra[:5])}"
                f"{', ...' if len(extra) > 5 else ''})")
    for fname, expected in files.items():
        if not (isinstance(fname, str) and (fname in (MODELFILE, README) or fname.endswith(".gguf"))
                and "/" not in fname and "\\" not in fname and fname not in (".", "..")
                and isinstance(expected, dict)):
            return f"has a {MARKER} listing {fname!r}, which Tailor never writes"
        path = folder / fname
        try:
            fst = path.lstat()
        except OSError:
            continue  # a file of ours the user removed: nothing of theirs is lost
        if not stat.S_ISREG(fst.st_mode):
            return f"holds {fname}, which is not a plain file (a link or a folder)"
        try:
            actual = _file_record(path)
        except OSError as e:
            return f"holds {fname}, which cannot be read ({e})"
        if actual != expected:
            return f"holds {fname}, which changed since Tailor wrote it"
    if MODELFILE in files and (folder / MODELFILE).exists():
        if not (folder / MODELFILE).read_text(encoding="utf-8", errors="replace").startswith(
                "# Modelfile written by Tailor"):
            return f"holds a {MODELFILE} that Tailor did not write"
    return ""


def protected_folders() -> list[tuple[Path, str]]:
    """(folder or file, what it is) that a Modelfile folder may never be, be inside, or hold:
    every library adapter's base model and dataset, the library's own folders, the Hugging
    Face cache, the home folder."""
    from .. import paths

    found: list[tuple[Path, str]] = []
    home = paths.tailor_home()
    found += [(home / sub, f"the Tailor library's {sub}/ folder")
              for sub in ("adapters", "runs", "models")]
    try:
        from ..library import list_adapters

        adapters = list_adapters()
    except Exception:  # an unreadable library must not make the check fail open
        adapters = []
    for a in adapters:
        base = (a.manifest.get("base_model") or {}) if isinstance(a.manifest, dict) else {}
        data = (a.manifest.get("dataset") or {}) if isinstance(a.manifest, dict) else {}
        if isinstance(base, dict) and base.get("path"):
            found.append((Path(str(base["path"])), f"the base model of adapter {a.name!r}"))
        if isinstance(data, dict) and data.get("path"):  # a file, or a folder of splits
            found.append((Path(str(data["path"])), f"the dataset of adapter {a.name!r}"))
    try:
        from huggingface_hub import constants as hf_constants

        found.append((Path(hf_constants.HF_HUB_CACHE), "the Hugging Face model cache"))
    except ImportError:
        pass
    return found


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def location_problem(out: Path, protected: list[tuple[Path, str]] | None = None) -> str:
    """Why a Modelfile folder may not be written at ``out`` ('' when it may): it is a link, the
    home folder, a filesystem root or the library root, or it is, is inside or holds one of
    ``protected`` (default :func:`protected_folders`)."""
    from .. import paths

    if out.is_symlink():
        return "is a symbolic link"
    real = _real(out)
    if real == Path(real.anchor):
        return "is the root of the file system"
    home = _real(Path.home())
    if real == home or home.is_relative_to(real):
        return "is your home folder" if real == home else "holds your home folder"
    library = _real(paths.tailor_home())
    if real == library or library.is_relative_to(real):
        return ("is the Tailor library" if real == library
                else f"holds the Tailor library ({library})")
    for path, what in (protected_folders() if protected is None else protected):
        p = _real(path)
        if real == p:
            return f"is {what} ({p})"
        if real.is_relative_to(p):
            return f"is inside {what} ({p})"
        if p.is_relative_to(real):
            return f"holds {what} ({p})"
    return ""


def write_modelfile_folder(out_dir: Path | str, *, name: str, spec: ModelfileSpec,
                           gguf: Path | str | None = None, adapter_gguf: Path | str | None = None,
                           overwrite: bool = False, template_family: str = "",
                           verified: bool = True, create_command: str = "",
                           protected: list[tuple[Path, str]] | None = None) -> Path:
    """Write ``out_dir`` (atomically: built under a temporary name, then renamed) holding the
    GGUF (and/or adapter GGUF) linked or copied from the user's file, ``Modelfile`` and
    ``README.txt``. ``spec.from_``/``spec.adapter`` are rewritten to the files' local names.

    An existing non-empty ``out_dir`` is rewritten only when Tailor wrote it (its marker
    lists exactly its files, unchanged); ``overwrite`` (``--replace``) never widens that. A
    folder that is, is inside or holds a base model, dataset, the library or the home folder
    (:func:`location_problem`; ``protected`` defaults to :func:`protected_folders`) is refused.

    Raises TailorError, leaving ``out_dir`` untouched, for those and for a missing file.
    """
    out = Path(out_dir)
    for p in (gguf, adapter_gguf):
        if p is not None and not Path(p).is_file():
            raise TailorError(f"{p} does not exist or is not a file")
    if out.exists() and not out.is_dir() and not out.is_symlink():
        raise TailorError(f"{out} exists and is not a folder; it was left untouched")
    where = location_problem(out, protected)
    if where:
        raise TailorError(f"Tailor will not write a Modelfile folder at {out}: it {where}; it "
                          "was left untouched", hint="choose a new, empty folder (or leave out "
                                                     "--modelfile-dir for the library's exports)")
    if out.exists() and any(out.iterdir()):
        problem = tailor_folder_problem(out)
        if problem and overwrite:
            raise TailorError(f"--replace only replaces a Modelfile folder Tailor wrote, and "
                              f"{out} {problem}; it was left untouched",
                              hint="choose another folder; if you no longer need what is in "
                                   "it, remove it yourself")
        if problem:
            raise TailorError(f"{out} already exists and is not empty; it was left untouched",
                              hint="choose another folder (--replace only replaces a folder "
                                   f"Tailor wrote, recognised by its {MARKER})")
    for p in (gguf, adapter_gguf):
        if p is not None and out.exists() and Path(p).resolve().is_relative_to(out.resolve()):
            raise TailorError(f"{p} is inside {out}; choose a folder that does not hold the "
                              "GGUF itself")
    spec = ModelfileSpec(**{**spec.__dict__})
    with atomic_path(out, overwrite=out.exists()) as tmp:
        tmp.mkdir(parents=True)
        if gguf is not None:
            g = Path(gguf)
            link_or_copy(g, tmp / g.name)
            spec.from_ = f"./{g.name}"
        if adapter_gguf is not None:
            a = Path(adapter_gguf)
            link_or_copy(a, tmp / a.name)
            spec.adapter = f"./{a.name}"
        (tmp / MODELFILE).write_text(spec.render(name), encoding="utf-8")
        gguf_name = Path(gguf).name if gguf is not None else (Path(adapter_gguf).name
                                                             if adapter_gguf else "")
        (tmp / README).write_text(readme_text(name, gguf_name, adapter_only=gguf is None,
                                              template_family=template_family,
                                              verified=verified, create_command=create_command),
                                  encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(_marker(name, tmp), indent=2) + "\n",
                                  encoding="utf-8")
    return out
