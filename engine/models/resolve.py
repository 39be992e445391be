"""Find a base model folder: a local path, or a Hugging Face repo id fetched with huggingface_hub.

Only safetensors weights, configs and tokenizer files are ever taken; pickle checkpoints are
refused (loading them can run arbitrary code) and remote code is never trusted.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..events import Cancelled, CancelToken, Progress, Reporter, TailorError, null_reporter

# What a model needs, and nothing that executes: no *.py, no pickles.
ALLOW_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "config.json",
                  "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
                  "vocab.json", "merges.txt", "*.tiktoken", "chat_template.json",
                  "chat_template.jinja", "preprocessor_config.json"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_path(text: str) -> bool:
    """True for anything a user meant as a path: absolute, ./ ../ ~, or whose first part exists."""
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", ".."):
        return True
    if os.sep in text or "/" in text:
        first = text.replace("\\", "/").split("/")[0]
        if first and Path(first).exists():
            return True
    return Path(text).exists()


def check_model_folder(folder: Path) -> Path:
    """Raise TailorError unless ``folder`` holds a config and safetensors weights."""
    if not folder.is_dir():
        raise TailorError(f"model folder not found: {folder}",
                          hint="give the folder that holds config.json and *.safetensors")
    from .folder_files import model_files

    files = model_files(folder)
    if not (folder / "config.json").exists() and not os.path.islink(folder / "config.json"):
        raise TailorError(f"{folder} has no config.json, so it is not a Hugging Face model folder",
                          hint="point at the folder that holds config.json and *.safetensors")
    files.require("config.json")
    # A weight file that resolves outside the folder is refused, not skipped: a model loaded
    # with some weights missing would be a different model.
    for s in files.skipped_matching("*.safetensors"):
        raise TailorError(f"{folder / s.name} is not loaded: {s.reason}; Tailor loads weights "
                          "only from inside the model folder",
                          hint="copy the weight file itself into the model folder")
    weights = files.glob("*.safetensors")
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise TailorError(
                f"{folder} holds only pickle checkpoints ({', '.join(pickles[:4])}); Tailor does "
                "not load pickle files because opening them can run arbitrary code",
                hint="use the model's safetensors version (most Hugging Face repos publish one), "
                     "or convert it with a tool you trust")
        raise TailorError(f"{folder} has no *.safetensors weight files",
                          hint="download the model's safetensors weights into this folder")
    return folder


def progress_bar_class(report: Reporter, cancel: CancelToken | None, job: str):
    """A tqdm class for huggingface_hub that turns its byte counts into Progress events (and
    notices a cancel between chunks) instead of drawing on the terminal."""
    import io

    from tqdm import tqdm

    class TailorBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs.update(file=io.StringIO(), disable=False)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            result = super().update(n)
            if cancel is not None and cancel.requested:
                raise Cancelled(cancel.reason)
            report(Progress(job=job, stage="download", done=float(self.n),
                            total=float(self.total or 0), message=str(self.desc or "")))
            return result

    return TailorBar


def resolve_model(path_or_repo_id: str | os.PathLike, report: Reporter = null_reporter,
                  cancel: CancelToken | None = None, revision: str | None = None,
                  job: str = "model") -> Path:
    """The local folder of a model given as a path or a Hugging Face repo id.

    A path must exist (a mistyped path is "not found", never looked up on the hub). A repo id is
    served from the local Hugging Face cache when present (offline works), else downloaded
    (safetensors, configs and tokenizer files only) with Progress events. Raises TailorError.
    """
    text = str(path_or_repo_id).strip()
    if not text:
        raise TailorError("no model given", hint="pass a model folder or a Hugging Face repo id")
    if isinstance(path_or_repo_id, Path) or looks_like_path(text):
        folder = Path(text).expanduser()
        if not folder.exists():
            raise TailorError(f"model folder not found: {folder}",
                              hint="check the path; a local path is never looked up online")
        return check_model_folder(folder.resolve())
    if not _REPO_ID.match(text):
        raise TailorError(f"{text!r} is neither an existing folder nor a Hugging Face repo id "
                          "(owner/name)", hint="give a model folder or an id like "
                                              "mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    return check_model_folder(_snapshot(text, report, cancel, revision, job))


def _snapshot(repo_id: str, report: Reporter, cancel: CancelToken | None, revision: str | None,
              job: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # the cache first: works offline and costs no request
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise TailorError(f"{repo_id} is not in the local Hugging Face cache (and there is no "
                          f"local folder ./{repo_id}) and downloads are off (HF_HUB_OFFLINE is "
                          "set)",
                          hint="connect to the internet and unset HF_HUB_OFFLINE, or download "
                               "the model folder and pass its path")
    bar = progress_bar_class(report, cancel, job)
    report(Progress(job=job, stage="download", done=0, total=0, message=f"fetching {repo_id}"))
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS,
                                 tqdm_class=bar)
    except Cancelled:
        raise
    except Exception as e:  # network, 404, gated repo: all end as one message for the user
        raise TailorError(f"could not download {repo_id} (there is no local folder ./{repo_id} "
                          f"either): {type(e).__name__}: {e}",
                          hint="check the repo id and your connection; gated models need "
                               "`huggingface-cli login`") from e
    return Path(path)


def hf_cache_revision(folder: Path) -> str | None:
    """The commit hash when ``folder`` is a snapshot in a Hugging Face cache, else None."""
    parts = folder.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-1]
    return None


def hf_cache_repo_id(folder: Path) -> str | None:
    parts = folder.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/")
    return None
