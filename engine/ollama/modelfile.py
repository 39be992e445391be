"""A ready folder for people without a running Ollama (and for LM Studio and llama.cpp users):
the GGUF (hard-linked or copied, never moved), a ``Modelfile`` and a ``README.txt`` with the one
command to run.

Modelfile syntax (ollama ``parser/parser.go``): ``INSTRUCTION value`` per line; a value is
trimmed, then unquoted from one or three double quotes (three may span lines). There is no
escaping, so a value containing three double quotes in a row cannot be written: we refuse it.
"""
from __future__ import annotations

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


def _written_by_tailor(folder: Path) -> bool:
    """A folder this module wrote earlier (Modelfile with our header, README, GGUFs only): it
    holds nothing of the user's that is not elsewhere, so writing it again is safe."""
    names = {p.name for p in folder.iterdir()}
    try:
        ours = (folder / MODELFILE).read_text(encoding="utf-8").startswith(
            "# Modelfile written by Tailor")
    except OSError:
        return False
    return ours and all(n in (MODELFILE, README) or n.endswith(".gguf") for n in names) and all(
        (folder / n).is_file() for n in names)


def write_modelfile_folder(out_dir: Path | str, *, name: str, spec: ModelfileSpec,
                           gguf: Path | str | None = None, adapter_gguf: Path | str | None = None,
                           overwrite: bool = False, template_family: str = "",
                           verified: bool = True, create_command: str = "") -> Path:
    """Write ``out_dir`` (atomically: built under a temporary name, then renamed) holding the
    GGUF (and/or adapter GGUF) linked or copied from the user's file, ``Modelfile`` and
    ``README.txt``. ``spec.from_``/``spec.adapter`` are rewritten to the files' local names.

    Raises TailorError if ``out_dir`` exists (unless ``overwrite``) or a file is missing.
    """
    out = Path(out_dir)
    for p in (gguf, adapter_gguf):
        if p is not None and not Path(p).is_file():
            raise TailorError(f"{p} does not exist or is not a file")
    if out.exists() and not out.is_dir():
        raise TailorError(f"{out} exists and is not a folder; it was left untouched")
    if out.exists() and any(out.iterdir()) and not (overwrite or _written_by_tailor(out)):
        raise TailorError(f"{out} already exists and is not empty; it was left untouched",
                          hint="choose another folder, or pass --replace to replace it")
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
    return out
