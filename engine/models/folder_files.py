"""Which files of a model folder Tailor may read: those that stay inside the folder.

A model folder is the user's (or a download's), and a symbolic link in it can point anywhere:
``merges.txt -> ~/.ssh/id_ed25519`` would otherwise be copied into a fused model, embedded in a
GGUF or uploaded to Ollama. A file is readable when it resolves inside the folder or, for a
Hugging Face cache snapshot (``models--O--N/snapshots/<rev>/``, whose files are links by
design), inside that repo's ``blobs/`` store. Everything else is skipped, with the reason, and
the caller tells the user. Hidden entries (``.cache/`` of ``huggingface_hub``) are not listed.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..events import Log, Reporter, TailorError

# Subfolders are listed this deep (transformers reads additional_chat_templates/*.jinja).
MAX_DEPTH = 3


@dataclass(frozen=True)
class SkippedFile:
    name: str  # path relative to the model folder, with "/"
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


@dataclass
class ModelFiles:
    """The readable files of ``folder`` by relative name, and the ones skipped."""

    folder: Path  # as resolved
    files: dict[str, Path] = field(default_factory=dict)  # name -> path inside ``folder``
    skipped: list[SkippedFile] = field(default_factory=list)

    def get(self, name: str) -> Path | None:
        """The path of ``name`` when it is readable, else None (absent or skipped)."""
        return self.files.get(name)

    def glob(self, pattern: str) -> list[Path]:
        """Readable top-level files whose name matches ``pattern``, sorted by name."""
        return [p for n, p in sorted(self.files.items())
                if "/" not in n and fnmatch.fnmatchcase(n, pattern)]

    def skipped_matching(self, pattern: str) -> list[SkippedFile]:
        return [s for s in self.skipped if fnmatch.fnmatchcase(s.name, pattern)]

    def note(self) -> str:
        """One line for the user, or "" when nothing was skipped."""
        if not self.skipped:
            return ""
        return (f"not read from {self.folder}: " + "; ".join(str(s) for s in self.skipped)
                + ". Tailor reads only files inside the model folder")

    def report_skipped(self, report: Reporter, job: str) -> None:
        if self.skipped:
            report(Log(job=job, level="warning", message=self.note()))

    def require(self, name: str, what: str = "") -> Path:
        """The path of ``name``; TailorError naming the reason when it was skipped."""
        path = self.files.get(name)
        if path is not None:
            return path
        for s in self.skipped:
            if s.name == name:
                raise TailorError(
                    f"{self.folder / name} is not read: {s.reason}"
                    + (f"; {what}" if what else ""),
                    hint="copy the real file into the model folder (Tailor never follows a link "
                         "out of a model folder)")
        raise TailorError(f"{self.folder / name} not found")


def allowed_roots(folder: Path) -> list[Path]:
    """Where the files of ``folder`` may resolve to: the folder, and for a Hugging Face cache
    snapshot its repo's blob store."""
    root = Path(folder).resolve()
    roots = [root]
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        roots.append((root.parent.parent / "blobs").resolve())
    return roots


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def model_files(folder: Path | str) -> ModelFiles:
    """List ``folder``'s readable files (see the module docstring); nothing is opened."""
    root = Path(folder).resolve()
    roots = allowed_roots(root)
    result = ModelFiles(root)

    def walk(directory: Path, prefix: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = prefix + entry.name
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if depth < MAX_DEPTH:
                    walk(path, name + "/", depth + 1)
                continue
            try:
                target = path.resolve(strict=True)
                mode = target.stat().st_mode
            except (OSError, RuntimeError):  # a broken link or a link loop
                result.skipped.append(SkippedFile(name, "a broken link"))
                continue
            if not _inside(target, roots):
                result.skipped.append(SkippedFile(
                    name, f"a link to {target}, outside the model folder"))
            elif stat.S_ISDIR(mode):
                continue  # a link to a folder inside: its files are listed where they are
            elif not stat.S_ISREG(mode):
                result.skipped.append(SkippedFile(name, "not a regular file"))
            else:
                result.files[name] = path

    walk(root, "", 0)
    return result


@contextlib.contextmanager
def readable_view(folder: Path | str, files: ModelFiles | None = None):
    """A folder to hand to loaders that read files by name (transformers, mlx-lm): ``folder``
    itself when nothing was skipped, else a temporary folder of links to the readable files
    only, removed on exit. Yields the path."""
    files = files or model_files(folder)
    if not files.skipped:
        yield Path(folder)
        return
    view = Path(tempfile.mkdtemp(prefix="tailor-model-view-"))
    try:
        for name, path in files.files.items():
            link = view / name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), link)
        yield view
    finally:
        shutil.rmtree(view, ignore_errors=True)
