"""`tailor push`: publish a library adapter to the Hugging Face Hub with huggingface_hub.

Stages: ``plan_push`` (every refusal before any work: the adapter, the repo id, the GGUF types,
the login), ``stage`` (the files in a temporary folder of the library: the adapter as mlx-lm
loads it, optionally PEFT's form and verified GGUFs, the loss curve and the model card), the
caller's confirmation of the exact file list, then ``upload``: create the repo (kept when it
exists) and one commit. Nothing is uploaded before the confirmation.

Uploads go through the Hub's LFS protocol with our own file objects: each read reports progress
and checks the stop request (a stop cancels mid-file), and an object the Hub already has is
not sent again, so a push cut off part-way resumes when it is run again. (Passing file objects
makes huggingface_hub take its HTTP LFS path instead of hf_xet's, which reports to neither.)
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

from ..events import Cancelled, ErrorCode, Job, TailorError
from ..results import PushFile, PushPlan, PushResult

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
PEFT_FOLDER = ""        # PEFT's files at the repo's root: PeftModel.from_pretrained(repo)
MLX_FOLDER_WITH_PEFT = "mlx"  # then mlx-lm's (same adapter_config.json name) in a subfolder


def hub_token() -> str:
    """The user's usual Hugging Face login (HF_TOKEN, or the token `hf auth login` saved)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise TailorError("not logged in to the Hugging Face Hub",
                          hint="run `hf auth login` (or set HF_TOKEN) with a token that may "
                               "write, then push again", code=ErrorCode.BAD_INPUT)
    return token


def endpoint() -> str | None:
    """$HF_ENDPOINT, read now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def plan_push(name: str, repo_id: str, *, ggufs=(), peft: bool = False,
              private: bool = False) -> PushPlan:
    """What the push will upload, refused before any work when it cannot be done."""
    from ..export.mixtures import QUANTS
    from ..fuse import resolve_adapter

    if not REPO_ID.match(repo_id or "") or ".." in repo_id or "--" in repo_id:
        raise TailorError(f"{repo_id!r} is not a Hub repository id",
                          hint="give OWNER/NAME, e.g. my-name/my-style-lora (letters, digits, "
                               "'-', '_', '.')", code=ErrorCode.BAD_INPUT)
    info, adapter_config, _base = resolve_adapter(name)
    if info.status not in ("finished", "stopped"):
        raise TailorError(f"adapter {name!r} is {info.status}; only a finished (or stopped) "
                          "adapter is published", hint="wait for the run to end")
    kind = adapter_config.get("fine_tune_type", "lora")
    if kind == "full":
        raise TailorError(f"adapter {name!r} is a full fine-tune: its weights are a whole "
                          "model, which `tailor push` does not publish",
                          hint="push a GGUF of it with --gguf TYPE, or publish the fused folder "
                               "with huggingface-cli upload")
    quants = [q.lower() for q in ggufs]
    unknown = [q for q in quants if q not in QUANTS]
    if unknown:
        raise TailorError(f"unknown GGUF type {', '.join(unknown)}",
                          hint="the types are listed in `tailor export --help`")
    hub_token()
    mlx = MLX_FOLDER_WITH_PEFT + "/" if peft else ""
    files = [PushFile("README.md", None, "the model card"),
             PushFile(f"{mlx}adapters.safetensors", info.weights.stat().st_size,
                      "the adapter, as mlx-lm loads it"),
             PushFile(f"{mlx}adapter_config.json", None, "its mlx-lm settings")]
    if peft:
        files += [PushFile("adapter_model.safetensors", None, "the adapter in PEFT's format"),
                  PushFile("adapter_config.json", None, "its PEFT LoraConfig")]
    files += [PushFile(gguf_name(name, q), None, f"the fused model as GGUF {q.upper()}, "
                       "verified in llama.cpp") for q in quants]
    if _history(info.manifest):
        files.append(PushFile("loss.png", None, "the loss curve"))
    return PushPlan(adapter=name, repo=repo_id, private=private, files=files, staged=False)


def gguf_name(adapter: str, quant: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', adapter)}-{quant.upper()}.gguf"


def _history(manifest: dict) -> tuple[list, list]:
    h = manifest.get("loss_history") or {}
    return (h.get("train") or [], h.get("valid") or []) if (h.get("train") or h.get("valid")) \
        else ()


def _base_license(base_dir: Path) -> str | None:
    """The base model's license from its own card's front matter, where it has one."""
    from huggingface_hub import metadata_load

    readme = Path(base_dir) / "README.md"
    with contextlib.suppress(Exception):  # a card that does not parse names no license
        value = (metadata_load(readme) or {}).get("license") if readme.is_file() else None
        return str(value) if value else None
    return None


def _public_base_name(info) -> str:
    """The base as others can find it: its Hub id, else the folder's name (never a local
    path, which names the user's home folder)."""
    base = info.manifest.get("base_model") or {}
    return base.get("repo_id") or Path(str(base.get("path") or info.base_model)).name


def _stage_adapter(info, adapter_config: dict, folder: Path, peft: bool, job: Job) -> None:
    from ..atomic import write_json_atomic

    mlx = folder / MLX_FOLDER_WITH_PEFT if peft else folder
    mlx.mkdir(parents=True, exist_ok=True)
    try:
        os.link(info.weights, mlx / "adapters.safetensors")  # read-only use: no copy
    except OSError:
        shutil.copyfile(info.weights, mlx / "adapters.safetensors")
    write_json_atomic(mlx / "adapter_config.json",
                      {**adapter_config, "model": _public_base_name(info)})
    if peft:
        from ..export.peft import PEFT_CONFIG, export_peft

        export_peft(info.name, folder / ".peft", job=job.nested(0.05, 0.1))
        for f in (folder / ".peft").iterdir():
            os.replace(f, folder / f.name)
        (folder / ".peft").rmdir()
        config = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = _public_base_name(info)
        write_json_atomic(folder / PEFT_CONFIG, config)


def stage(plan: PushPlan, folder: Path, job: Job) -> PushPlan:
    """Write every file of ``plan`` into ``folder``; returns the plan with exact sizes."""
    from ..evaluate.record import latest_report
    from ..export.gguf_export import export_gguf
    from ..fuse import resolve_adapter
    from .card import CardInputs, model_card
    from .png import write_loss_curve

    info, adapter_config, base_dir = resolve_adapter(plan.adapter)
    peft = any(f.path == "adapter_model.safetensors" for f in plan.files)
    _stage_adapter(info, adapter_config, folder, peft, job)
    quants = [f.path.rsplit("-", 1)[-1][:-len(".gguf")].lower() for f in plan.files
              if f.path.endswith(".gguf")]
    for i, quant in enumerate(quants):
        job.cancel.raise_if_cancelled()
        span = 0.1 + 0.6 * i / len(quants), 0.1 + 0.6 * (i + 1) / len(quants)
        out = folder / gguf_name(plan.adapter, quant)
        # (listed=False: a staged copy, removed after the upload, is no export of the adapter)
        result = export_gguf(info, out, quant, job=job.nested(*span), listed=False)
        if not result.verified:
            raise TailorError(f"the {quant.upper()} GGUF did not pass verification in "
                              "llama.cpp, so nothing was uploaded",
                              hint=f"see `tailor export --adapter {plan.adapter} --quant "
                                   f"{quant} --out FILE` for the checks")
        Path(f"{out}.json").unlink(missing_ok=True)  # the local record names local paths
    history = _history(info.manifest)
    if history:
        write_loss_curve(folder / "loss.png", *history)
    staged = [PushFile(f.path, (folder / f.path).stat().st_size, f.what) for f in plan.files
              if f.path != "README.md"]
    card = CardInputs(name=plan.adapter, repo_id=plan.repo, manifest=info.manifest,
                      base_license=_base_license(base_dir),
                      files=[(f.path, f.size, f.what) for f in staged],
                      ggufs=[f.path for f in staged if f.path.endswith(".gguf")],
                      peft_folder=PEFT_FOLDER if peft else None,
                      mlx_folder=MLX_FOLDER_WITH_PEFT if peft else "",
                      evaluation=latest_report(info.path),
                      loss_curve="loss.png" if history else None)
    (folder / "README.md").write_text(model_card(card), encoding="utf-8")
    readme = PushFile("README.md", (folder / "README.md").stat().st_size, "the model card")
    return PushPlan(adapter=plan.adapter, repo=plan.repo, private=plan.private,
                    files=[readme, *staged], staged=True)


class ProgressFile(io.BufferedReader):
    """A file huggingface_hub reads to upload: each read adds to the push's progress and
    raises Cancelled once a stop was asked (so a stop takes effect mid-file)."""

    def __init__(self, path: Path, counter: "UploadCounter"):
        super().__init__(io.FileIO(str(path), "rb"))
        self.counter = counter

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.counter.add(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data = super().read1(size)
        self.counter.add(len(data))
        return data


class UploadCounter:
    def __init__(self, total: int, job: Job):
        self.total, self.job = max(total, 1), job
        self.done = 0
        self.on = False  # off while huggingface_hub hashes the files
        self.lock = threading.Lock()
        self.progress = job.progress("upload", 0.7, 1.0)
        self.last = 0.0

    def add(self, n: int) -> None:
        self.job.cancel.raise_if_cancelled()
        if not self.on:
            return
        with self.lock:
            self.done = min(self.done + n, self.total)
            now = time.monotonic()
            if now - self.last >= 0.2 or self.done == self.total:
                self.last = now
                self.progress(self.done, self.total, f"uploading ({self.done} of "
                              f"{self.total} bytes read)")


def _cause(exc: BaseException, kind: type) -> BaseException | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _hub_error(exc: Exception, plan: PushPlan) -> TailorError:
    """A huggingface_hub failure in one sentence, with what to do next."""
    from huggingface_hub.errors import HfHubHTTPError

    chain = [exc]  # huggingface_hub wraps an upload's HTTP error ("Error while uploading ...")
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    http = next((e for e in chain if getattr(e, "response", None) is not None), None)
    status = getattr(http.response, "status_code", None) if http is not None else None
    exc = http or exc
    if status == 401:
        return TailorError(f"the Hub refused the login token for {plan.repo} (401)",
                           hint="run `hf auth login` with a token that may write",
                           code=ErrorCode.BAD_INPUT)
    if status == 403:
        return TailorError(f"the upload to {plan.repo} was refused or cut off (403): "
                           f"{str(exc).splitlines()[0][:200]}",
                           hint="check that the token may write to this repository; running "
                                "the same push again sends only the files the Hub lacks",
                           code=ErrorCode.NETWORK)
    kind = "answered with an error" if isinstance(exc, HfHubHTTPError) else "could not be reached"
    return TailorError(f"the Hugging Face Hub {kind} while pushing to {plan.repo}: "
                       f"{str(exc).splitlines()[0][:200]}",
                       hint="check the connection and push again: files already on the Hub "
                            "are not sent twice", code=ErrorCode.NETWORK)


def upload(plan: PushPlan, folder: Path, job: Job) -> PushResult:
    """Create the repo (kept when it exists) and commit the staged files in one commit."""
    import logging

    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                       enable_progress_bars)

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise TailorError("HF_HUB_OFFLINE is set, so huggingface_hub sends nothing; nothing was "
                          "uploaded", hint="unset HF_HUB_OFFLINE and push again",
                          code=ErrorCode.NETWORK)
    t0 = time.time()
    api = HfApi(endpoint=endpoint(), token=hub_token())
    counter = UploadCounter(sum(f.size or 0 for f in plan.files), job)
    quiet = logging.getLogger("huggingface_hub")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its note about the HTTP (not Xet) path is ours to make
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()  # progress goes out as our events, not its terminal bars
    files = [ProgressFile(folder / f.path, counter) for f in plan.files]
    try:
        url = api.create_repo(plan.repo, private=plan.private, exist_ok=True)
        ops = [CommitOperationAdd(f.path, fh) for f, fh in zip(plan.files, files)]
        counter.on = True
        commit = api.create_commit(plan.repo, ops, num_threads=2,
                                   commit_message=f"Upload {plan.adapter} with Tailor")
    except (Cancelled, TailorError):
        raise
    except Exception as e:  # noqa: BLE001 - huggingface_hub's HTTP and network errors
        stop = _cause(e, Cancelled)  # a stop inside an upload thread comes back wrapped
        if stop is not None:
            raise stop from None
        raise _hub_error(e, plan) from e
    finally:
        quiet.setLevel(level)
        if not bars_were_off:
            enable_progress_bars()
        for fh in files:
            fh.close()
    return PushResult(adapter=plan.adapter, repo=plan.repo, url=str(url),
                      commit_url=commit.commit_url, private=plan.private, files=plan.files,
                      uploaded_bytes=counter.done, seconds=round(time.time() - t0, 3))


@contextlib.contextmanager
def staging_folder():
    """A temporary folder in the library (beside the adapters: the same disk), removed after."""
    from .. import paths
    from ..sweep import PUSH_STAGING

    # the pid names the owner, so a killed push's folder can be told from a live one's
    # (engine/sweep.py sweep_push_staging)
    folder = paths.tailor_home() / PUSH_STAGING / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
