"""Find a base model folder: a local path, or a Hugging Face repo id fetched with huggingface_hub.

Only safetensors weights, configs and tokenizer files are ever taken; pickle checkpoints are
refused (loading them can run arbitrary code) and remote code is never trusted.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from ..events import (Cancelled, CancelToken, ErrorCode, Progress, Reporter, TailorError,
                      null_reporter)

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
    if not (folder / "config.json").exists() and not os.path.islink(folder / "config.json"):
        raise TailorError(f"{folder} has no config.json, so it is not a Hugging Face model folder",
                          hint="point at the folder that holds config.json and *.safetensors")
    from .folder_files import model_files

    files = model_files(folder)  # listed only now: a mistyped home folder is not walked
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


def progress_bar_class(report: Reporter, cancel: CancelToken | None, job: str,
                       on_update=None):
    """A tqdm class for huggingface_hub that turns its byte counts into Progress events (and
    notices a cancel between chunks) instead of drawing on the terminal. ``on_update()`` is
    called on every update (the download's sign of life)."""
    import io

    from tqdm import tqdm

    class TailorBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs.update(file=io.StringIO(), disable=False)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            result = super().update(n)
            if on_update is not None:
                on_update()
            if cancel is not None and cancel.requested:
                raise Cancelled(cancel.reason)
            report(Progress(job=job, stage="download", done=float(self.n),
                            total=float(self.total or 0), message=str(self.desc or "")))
            return result

    return TailorBar


def resolve_model(path_or_repo_id: str | os.PathLike, report: Reporter = null_reporter,
                  cancel: CancelToken | None = None, revision: str | None = None,
                  job: str = "model", timeout: float | None = None) -> Path:
    """The local folder of a model given as a path or a Hugging Face repo id.

    A path must exist (a mistyped path is "not found", never looked up on the hub). A repo id is
    served from the local Hugging Face cache when present (offline works), else downloaded
    (safetensors, configs and tokenizer files only) with Progress events; ``timeout`` is the
    silence allowed from the Hub (default ``HUB_TIMEOUT``). Raises TailorError, or Cancelled at
    once when ``cancel`` is set.
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
    return check_model_folder(_snapshot(text, report, cancel, revision, job, timeout=timeout))


HUB_TIMEOUT = 30.0  # seconds of silence from the Hub before a lookup or download gives up


class _HubWatch:
    """What the Hub's HTTP client hooks need to know about the lookup in progress: the per-
    request limit, when the Hub last showed a sign of life, and whether we stopped waiting."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.last = time.monotonic()
        self.abandoned = False

    def touch(self) -> None:
        self.last = time.monotonic()


# The lookup's own thread finds its watch in _local (so an abandoned lookup's retries stop even
# after another began); huggingface_hub's download pool threads use _watch, the one waited on.
_local = threading.local()
_watch: _HubWatch | None = None
_hooked = False


def _install_hub_hooks() -> None:
    """Hook huggingface_hub's shared HTTP client once: every request gets connect/read/write
    limits (it passes ``timeout=None``, no limit at all, for the repo lookup), a response
    counts as a sign of life, and a lookup we stopped waiting for makes no further request
    (its retries would otherwise go on in the background)."""
    global _hooked
    if _hooked:
        return
    from huggingface_hub.utils import _http as hub_http

    def on_request(request) -> None:
        watch = getattr(_local, "watch", None) or _watch
        if watch is None:
            return
        if watch.abandoned:
            raise Cancelled("the Hugging Face lookup was abandoned")
        limit = watch.timeout
        current = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {
            k: limit if current.get(k) is None else min(current[k], limit)
            for k in ("connect", "read", "write", "pool")}
        watch.touch()

    def on_response(response) -> None:
        watch = getattr(_local, "watch", None) or _watch
        if watch is not None:
            watch.touch()

    def factory():
        client = hub_http.default_client_factory()
        client.event_hooks["request"].append(on_request)
        client.event_hooks["response"].append(on_response)
        return client

    hub_http.set_client_factory(factory)
    _hooked = True


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:
        return "https://huggingface.co"


def _timed_out(e: BaseException) -> str:
    """'timeout' / 'connect' when a Hub error was caused by a timeout or a refused connection
    (huggingface_hub wraps them, e.g. in LocalEntryNotFoundError), else ''."""
    seen = 0
    while e is not None and seen < 10:
        name = type(e).__name__
        if "Timeout" in name:
            return "timeout"
        if name in ("ConnectError", "ProxyError"):
            return "connect"
        e = e.__cause__ or e.__context__
        seen += 1
    return ""


def _silent_hub(endpoint: str, repo_id: str, timeout: float) -> TailorError:
    return TailorError(f"the Hugging Face Hub ({endpoint}) did not answer within {timeout:g} s "
                       f"while fetching {repo_id}",
                       hint="check your connection and proxy settings (HTTPS_PROXY); on a slow "
                            "link raise --timeout; a local model folder works without the Hub",
                       code=ErrorCode.NETWORK)


def _snapshot(repo_id: str, report: Reporter, cancel: CancelToken | None, revision: str | None,
              job: str, timeout: float | None = None) -> Path:
    """The snapshot folder of ``repo_id``: from the local cache, else downloaded.

    The download runs in a daemon thread while this thread waits on ``cancel`` (a Ctrl-C
    counts at once, not when a blocked socket returns) and on the Hub's silence: no response
    or downloaded bytes for ``timeout`` seconds ends it with a TailorError naming the repo.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    global _watch
    timeout = HUB_TIMEOUT if timeout is None else float(timeout)
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
                               "the model folder and pass its path", code=ErrorCode.NETWORK)
    _install_hub_hooks()
    watch = _HubWatch(timeout)
    bar = progress_bar_class(report, cancel, job, on_update=watch.touch)
    report(Progress(job=job, stage="download", done=0, total=0, message=f"fetching {repo_id}"))
    box: dict = {}
    done = threading.Event()

    def fetch() -> None:
        _local.watch = watch
        try:
            box["path"] = snapshot_download(repo_id, revision=revision,
                                            allow_patterns=ALLOW_PATTERNS, tqdm_class=bar,
                                            etag_timeout=timeout)
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e
        finally:
            done.set()

    endpoint = _hub_endpoint()
    _watch = watch
    try:
        threading.Thread(target=fetch, name=f"hub-{repo_id}", daemon=True).start()
        while not done.wait(0.05):
            if cancel is not None and cancel.requested:
                watch.abandoned = True
                raise Cancelled(f"stopped while fetching {repo_id}")
            if time.monotonic() - watch.last > timeout:
                watch.abandoned = True
                raise _silent_hub(endpoint, repo_id, timeout)
    finally:
        if _watch is watch:
            _watch = None
    error = box.get("error")
    if isinstance(error, Cancelled):
        raise Cancelled(f"stopped while fetching {repo_id}") from None
    if error is not None:
        cause = _timed_out(error)
        if cause == "timeout":
            raise _silent_hub(endpoint, repo_id, timeout) from None
        if cause == "connect":
            raise TailorError(f"could not connect to the Hugging Face Hub ({endpoint}) to fetch "
                              f"{repo_id}", hint="check your connection and proxy settings; a "
                                                 "local model folder works without the Hub",
                              code=ErrorCode.NETWORK) from None
        # 404, gated repo and the rest: one message for the user
        raise TailorError(f"could not download {repo_id} (there is no local folder ./{repo_id} "
                          f"either): {type(error).__name__}: {str(error)[:500]}",
                          hint="check the repo id and your connection; gated models need "
                               "`huggingface-cli login`") from None
    return Path(box["path"])


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
