"""One training run from start to library entry: resolve and load the base, prepare the data,
add adapters, train, and leave ``<library>/adapters/<name>/`` with mlx-lm's adapter files and
Tailor's manifest. Also resumes such a run from its latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx

from .. import __version__, library, locks, sweep
from ..events import (Cancelled, CancelToken, ErrorCode, Job, Log, Progress, Reporter,
                      TailorError, as_job, null_reporter)
from ..results import JobState, TrainResult
from ..sizes import format_bytes
from ..models import load_model, model_fingerprint, resolve_model
from ..models.resolve import hf_cache_repo_id, hf_cache_revision, looks_like_path
from ..models.tokenizer import record_tokenizer_choice
from . import checkpoint as ckpt
from .adapters import adapter_shapes, apply_adapters, count, trainable_weights, \
    write_adapter_files
from .config import TrainConfig, merge_resume_config
from ..data import DataConfig
from ..evaluate.baseline import record_baseline
from .data_source import prepare
from .estimate import estimate
from .loop import NonFiniteLoss, Trainer
from .packing import refuse_unpackable
from .preference import check_objective, load_init_adapter
from .distributed import run_record as distributed_record, trainer_for


def versions() -> dict:
    import mlx_lm

    return {"tailor": __version__, "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__}


def _base_model_record(given: str, folder: Path, config: dict) -> dict:
    repo_id = None if looks_like_path(given) else given
    return {"path": str(folder), "given": given,
            "repo_id": repo_id or hf_cache_repo_id(folder),
            "revision": hf_cache_revision(folder),
            "sha256": model_fingerprint(folder),
            "architecture": config.get("model_type", "")}


def _tokenizer_alone(folder: Path):
    """The model's tokenizer without its weights, as ``load_model`` loads it; None when that
    fails (``load_model`` then says why)."""
    from ..models.tokenizer import load_tokenizer, refuse_custom_code

    refuse_custom_code(folder)  # said now, before the weights load
    try:
        return load_tokenizer(folder)  # reads only files inside the folder
    except Exception:  # noqa: BLE001 - any failure is reported by load_model next
        return None


def train_adapter(model: str | Path | None, data: str | Path | None, name: str,
                  cfg: TrainConfig | None = None, *, data_config=None, resume: bool = False,
                  report: Reporter = null_reporter, cancel: CancelToken | None = None,
                  job: Job | str = "train", library_dir: Path | None = None,
                  batch_hook: Callable | None = None,
                  machine_memory: Callable[[], int] | None = None) -> library.AdapterInfo:
    """Train (or with ``resume``, continue) the adapter ``name``; return its library entry.

    Raises TailorError (bad input, refused resume, non-finite loss, the adapter locked by
    another job: locks.Busy) and Cancelled (after saving a resumable checkpoint). Nothing
    already in the library is overwritten. ``batch_hook(micro, batch) -> batch`` and
    ``machine_memory() -> bytes`` are injection points for tests (faults, a small machine).
    """
    library.adapter_path(name, library_dir)  # a bad name is refused before any lock file
    job = as_job(job, report, cancel)
    # The adapter is this job's until it ends (SIGKILL included): a second train/resume or a
    # rename/delete meanwhile is refused, naming this job.
    with locks.adapter_lock(name, job.name, library_dir):
        # what a killed run of this adapter left (none of it is live: we hold the lock)
        sweep.report_removed(sweep.sweep_adapter_folder(
            library.adapter_path(name, library_dir)), job.report, job.name)
        return _train_locked(model, data, name, cfg, data_config=data_config, resume=resume,
                             report=job.report, cancel=job.cancel, job=job.name,
                             started=job.started, library_dir=library_dir,
                             batch_hook=batch_hook, machine_memory=machine_memory)


@dataclass
class _Loaded:
    """What the load stage produced: the base (resolved, loaded) and the prepared data."""

    model_dir: Path
    net: object
    tokenizer: object
    model_config: dict
    base: dict            # the run record's base_model
    prepared: object      # data_source.prepare's result
    dataset: dict         # the run record's dataset
    model_notes: list


def _train_locked(model, data, name, cfg, *, data_config, resume, report, cancel, job, started,
                  library_dir, batch_hook, machine_memory) -> library.AdapterInfo:
    """The run's stages, under the adapter's lock: settings (new or resumed), load, plan
    (adapters, memory, Started), the library entry, then train and record."""
    cancel = cancel or CancelToken()
    folder = library.adapter_path(name, library_dir)
    loaded = None
    if resume:
        model, data, cfg, data_config, loaded = _resume_settings(
            name, model, data, cfg, data_config, library_dir)
    else:
        if folder.exists():
            raise TailorError(f"an adapter named {name!r} already exists in the library; "
                              "nothing was changed",
                              hint=f"choose another name, or continue it with --resume {name}",
                              code=ErrorCode.NAME_TAKEN)
        cfg = cfg or TrainConfig()
    cfg.validate()
    if model is None or data is None:
        raise TailorError("both a base model (--model) and a dataset (--data) are needed")
    data_config = data_config or DataConfig()
    run = _load(model, data, cfg, data_config, report, cancel, job)
    check_objective(cfg, run.dataset["schema"], str(data))  # pairs for dpo/orpo only

    mx.random.seed(cfg.seed)  # adapter initialisation
    adapter_config = apply_adapters(run.net, cfg)
    init = load_init_adapter(run.net, cfg, run.base["sha256"], library_dir) \
        if cfg.init_adapter and loaded is None else None
    run_state = {"dataset_sha256": run.prepared.sha256,
                 "base_model_sha256": run.base["sha256"],
                 "adapter_shapes": adapter_shapes(trainable_weights(run.net))}
    if loaded is not None:
        _check_resumable(name, loaded.state, run_state)
    info_block = _plan_info(run, cfg, loaded, machine_memory)
    started(cfg.to_dict(), info_block)
    mem = info_block["memory"]
    if not mem["fits"]:
        report(Log(job=job, level="warning",
                   message=f"this run needs about {format_bytes(mem['total_bytes'])}, the "
                           f"machine has {format_bytes(mem['machine_bytes'])}; "
                           + mem["suggestion"]))
    manifest = _open_manifest(folder, name, run, cfg, adapter_config, data_config, info_block,
                              new=loaded is None)
    manifest["distributed"] = info_block["distributed"]  # written with the next record
    if init:
        manifest["init_adapter"] = init  # written with the manifest's next record
    return _train_and_record(folder, name, run, cfg, adapter_config, run_state, manifest,
                             loaded, report=report, cancel=cancel, job=job,
                             batch_hook=batch_hook, library_dir=library_dir)


def _resume_settings(name, model, data, cfg, data_config, library_dir):
    """A resumed run's inputs -> (model, data, settings, data settings, its checkpoint): the
    saved ones, with the flags given now merged where resume allows (else refused, naming
    each setting and why)."""
    info = library.get_adapter(name, library_dir)
    loaded = ckpt.latest_checkpoint(info.path)
    if loaded is None:
        raise TailorError(f"adapter {name!r} has no checkpoint to resume from",
                          hint="start a new run under another name")
    saved_cfg = TrainConfig.from_dict(loaded.state["config"])
    cfg = merge_resume_config(saved_cfg, cfg.to_dict() if cfg else {}, name)
    saved_data = info.manifest.get("data_settings") or {}
    if data_config is not None and saved_data:
        now = dataclasses.asdict(data_config)
        changed = [k for k, v in saved_data.items()  # (min_examples: the batch size)
                   if k not in ("max_seq_length", "preview_count", "min_examples")
                   and now.get(k) != v]
        if changed:
            raise TailorError(f"cannot resume {name!r} with changed data settings: "
                              + ", ".join(f"{k} {saved_data[k]!r} -> {now[k]!r}"
                                          for k in changed),
                              hint="resume with the original settings, or start a new run")
    if saved_data:
        data_config = DataConfig(**saved_data)
    model = model or info.manifest["base_model"]["given"]
    data = data or info.manifest["dataset"]["path"]
    return model, data, cfg, data_config, loaded


def _load(model, data, cfg, data_config, report, cancel, job) -> _Loaded:
    """Resolve and load the base, and prepare the data (with the tokenizer alone first, so a
    dataset too small is refused before the weights load, which can take minutes)."""
    report(Progress(job=job, stage="load", done=0, total=3, message="resolving the model"))
    model_dir = resolve_model(str(model), report=report, cancel=cancel, job=job)
    from ..models.folder_files import model_files
    from ..models.load import custom_code_note, read_config

    base_files = model_files(model_dir)
    base_files.report_skipped(report, job)  # linked out of the folder: not read
    model_json = read_config(model_dir)
    code_note = custom_code_note(model_json)  # auto_map: never run, say so
    if cfg.pack:  # said now, before the data and the weights load
        refuse_unpackable(model_json, str(model))
    if code_note:
        report(Log(job=job, message=code_note))
    model_notes = [n for n in (code_note, base_files.note()) if n]  # also in the Started info
    data_path = Path(data).expanduser()
    if not data_path.exists():
        raise TailorError(f"dataset not found: {data_path}")
    cancel.raise_if_cancelled()
    data_config.max_seq_length = cfg.max_seq_length
    # A training set smaller than one batch is refused by prepare_dataset, which names the file
    # and the counts.
    data_config.min_examples = max(data_config.min_examples, cfg.batch_size)
    prepared = counts = None
    tokenizer = _tokenizer_alone(model_dir)
    if tokenizer is not None:
        report(Progress(job=job, stage="load", done=1, total=3, message="preparing the data"))
        prepared, counts = prepare(data_path, tokenizer, data_config, report=report,
                                   cancel=cancel, job=job)
        cancel.raise_if_cancelled()
    report(Progress(job=job, stage="load", done=2, total=3, message="loading the model"))
    net, tokenizer, model_config = load_model(model_dir, cfg.quantize_base, tokenizer=tokenizer)
    base = _base_model_record(str(model), model_dir, model_config)
    base["tokenizer"] = record_tokenizer_choice(tokenizer, report, job)  # which one, why
    cancel.raise_if_cancelled()
    if prepared is None:
        prepared, counts = prepare(data_path, tokenizer, data_config, report=report,
                                   cancel=cancel, job=job)
    if len(prepared.train) == 0:
        raise TailorError(f"{data_path}: no training examples left after validation")
    dataset = {"path": str(data_path.resolve()), "sha256": prepared.sha256,
               "schema": getattr(prepared, "schema", ""), **{"counts": counts}}
    return _Loaded(model_dir, net, tokenizer, model_config, base, prepared, dataset,
                   model_notes)


def _row_tokens(example) -> int:
    """An example's longest row: a preference pair's longer side (its rejected answer may be
    longer than every chosen one; PreferencePair.tokens is the chosen side's)."""
    sides = (example.chosen, example.rejected) if hasattr(example, "rejected") else (example,)
    return max(len(side.tokens) for side in sides)


def _plan_info(run: _Loaded, cfg: TrainConfig, loaded, machine_memory) -> dict:
    """The Started event's info: parameter counts, the memory estimate, the data and base."""
    longest = max(_row_tokens(e) for e in run.prepared.train)
    if cfg.pack:  # rows fill up to the maximum length
        longest = min(cfg.max_seq_length, sum(len(e.tokens) for e in run.prepared.train))
    mem = estimate(run.net, run.model_config, cfg, longest,
                   machine_memory() if machine_memory is not None else None)
    return {"parameters": {"total": int(count(run.net.parameters())),
                           "trainable": count(trainable_weights(run.net))},
            "memory": mem, "dataset": run.dataset, "base_model": run.base,
            "resumed_from": str(loaded.path) if loaded else None,
            "model_notes": run.model_notes,
            "distributed": distributed_record()}  # ranks and hosts (engine/train/distributed.py)


def _open_manifest(folder: Path, name: str, run: _Loaded, cfg: TrainConfig,
                   adapter_config: dict, data_config, info_block: dict, new: bool) -> dict:
    """Create the library entry (``new``) or mark the resumed one running; -> its manifest."""
    now = time.time()
    if new:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()  # fails if another run took the name meanwhile
        except FileExistsError:
            raise TailorError(f"an adapter named {name!r} already exists in the library; "
                              "nothing was changed", code=ErrorCode.NAME_TAKEN) from None
        manifest = {"name": name, "status": JobState.RUNNING, "base_model": run.base,
                    "dataset": run.dataset,
                    "settings": cfg.to_dict(), "adapter_config": adapter_config,
                    "data_settings": dataclasses.asdict(data_config),
                    "seed": cfg.seed, "loss_history": {"train": [], "valid": []},
                    "best_val_loss": None, "versions": versions(), "created": now,
                    "started": now, "finished": None, "parameters": info_block["parameters"],
                    "memory_estimate": info_block["memory"],
                    # a reader seeing "running" can check that this process still exists
                    "pid": os.getpid(), "host": socket.gethostname()}
    else:
        manifest = library.read_manifest(folder)
        manifest.update(status=JobState.RUNNING, resumed=now, versions=versions(), pid=os.getpid(),
                        host=socket.gethostname())
    try:
        library.write_manifest(folder, manifest)
    except BaseException:
        if new:  # the folder made above is empty: a full disk leaves no husk
            ckpt.remove_tree(folder)
        raise
    return manifest


def _train_and_record(folder, name, run: _Loaded, cfg, adapter_config, run_state, manifest,
                      loaded, *, report, cancel, job, batch_hook, library_dir
                      ) -> library.AdapterInfo:
    """Train (from the checkpoint when resuming); the manifest follows every checkpoint and
    records how the run ended, whichever way it ends."""
    net, model_dir = run.net, run.model_dir

    def record(status: str, trainer: Trainer, **extra) -> None:
        h = trainer.history
        manifest.update(status=status, loss_history={"train": h.train, "valid": h.valid},
                        best_val_loss=h.best_val_loss, best_step=h.best_step,
                        steps=trainer.step, total_steps=trainer.steps,
                        trained_tokens=h.trained_tokens,
                        last_checkpoint=trainer.last_checkpoint, **extra)
        if hasattr(h, "metrics"):  # preference tuning's reward accuracy, margins, ...
            manifest["metrics_history"] = h.metrics
        library.write_manifest(folder, manifest)

    pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0
    trainer = trainer_for(cfg)(net, cfg, run.prepared.train, run.prepared.valid,
                                 adapter_dir=folder, run_state=run_state, report=report,
                                 cancel=cancel, job=job, pad_id=int(pad_id),
                                 batch_hook=batch_hook,
                                 on_checkpoint=lambda step, h: on_checkpoint())

    def on_checkpoint() -> None:
        # the folder always holds a loadable adapter: the latest checkpoint's weights
        write_adapter_files(folder, trainable_weights(net), adapter_config, str(model_dir))
        record(JobState.RUNNING, trainer)

    def record_end(status: str, **extra) -> None:
        """Best effort: the manifest write may fail for the same reason the run did (a full
        disk); the run's own error is the one to report."""
        try:
            record(status, trainer, finished=time.time(), **extra)
        except (TailorError, OSError) as e:
            report(Log(job=job, level="warning",
                       message=f"the manifest could not record the run's end: {e}"))

    if cfg.pack:
        manifest["packing"] = _packing_note(trainer, report, job)
    if loaded is not None:
        trainer.restore(loaded)
    try:
        # before step 1 (so a run stopped at once has it); never again on resume
        record_baseline(manifest, folder, net, run.tokenizer, run.prepared.valid, cfg,
                        val_loss=trainer.evaluate, resumed=loaded is not None,
                        job=Job(job, report, cancel))
        result = trainer.run()
    except (Cancelled, KeyboardInterrupt):
        record_end(JobState.CANCELLED)
        raise
    except NonFiniteLoss as e:
        # The weights in memory are poisoned; the adapter files keep the last finite state.
        if e.checkpoint:
            write_adapter_files(folder, mx.load(str(Path(e.checkpoint) /
                                                    "adapters.safetensors")),
                                adapter_config, str(model_dir))
        record_end(JobState.FAILED, error=e.message)
        raise
    except TailorError as e:
        record_end(JobState.FAILED, error=e.message)
        raise
    except BaseException as e:
        record_end(JobState.FAILED, error=f"{type(e).__name__}: {e}")
        raise
    write_adapter_files(folder, trainable_weights(net), adapter_config, str(model_dir))
    record(JobState.FINISHED, trainer, finished=time.time(), stopped_early=result.stopped_early)
    return library.get_adapter(name, library_dir)


def _packing_note(trainer: Trainer, report: Reporter, job: str) -> dict:
    """What packing did to the training set, said in the run log; -> the manifest's record."""
    from .batching import BatchStream

    packed = trainer.train
    unpacked = BatchStream(packed.examples, packed.batch_size, packed.max_seq_length,
                           packed.seed)
    (pad_u, all_u), (pad_p, all_p) = unpacked.padding(), packed.padding()
    note = {"examples": len(packed.examples), "rows": packed.n_units,
            "row_tokens": packed.max_seq_length, "padding_unpacked": pad_u,
            "padding_packed": pad_p, "batches_unpacked": unpacked.per_epoch,
            "batches_packed": packed.per_epoch}
    report(Log(job=job, message=(
        f"packing: {note['examples']} examples in {note['rows']} rows of up to "
        f"{note['row_tokens']} tokens; padding per epoch {pad_p:,} of {all_p:,} positions "
        f"({100 * pad_p / max(1, all_p):.1f}%) packed against {pad_u:,} of {all_u:,} "
        f"({100 * pad_u / max(1, all_u):.1f}%) unpacked: "
        + (f"{pad_u - pad_p:,} padded positions saved" if pad_p <= pad_u else
           f"{pad_p - pad_u:,} more padded positions (rows left part-full)")
        + f"; {unpacked.per_epoch} -> {packed.per_epoch} batches per epoch")))
    return note


def train_result(info: library.AdapterInfo) -> TrainResult:
    """The command's result for a finished run, from its library entry."""
    m = info.manifest
    train = (m.get("loss_history") or {}).get("train") or []
    return TrainResult(adapter=info.name, path=str(info.path), steps=int(m.get("steps") or 0),
                       best_val_loss=m.get("best_val_loss"),
                       final_train_loss=train[-1][1] if train else None,
                       stopped_early=bool(m.get("stopped_early")))


def _check_resumable(name: str, saved: dict, now: dict) -> None:
    if saved.get("base_model_sha256") != now["base_model_sha256"]:
        raise TailorError(f"cannot resume {name!r}: the base model differs from the one it was "
                          "trained on", hint="resume with the original base model folder")
    if saved.get("dataset_sha256") != now["dataset_sha256"]:
        raise TailorError(f"cannot resume {name!r}: the dataset changed since the run started "
                          f"(sha256 {str(saved.get('dataset_sha256'))[:12]}… now "
                          f"{now['dataset_sha256'][:12]}…)",
                          hint="resume with the original dataset file, or start a new run")
    if saved.get("adapter_shapes") != now["adapter_shapes"]:
        raise TailorError(f"cannot resume {name!r}: the adapter's shape differs from the "
                          "checkpoint's (rank, targets or layers changed)")


def _saved_config(name: str, library_dir: Path | None = None) -> TrainConfig:
    """The settings a run was started with (from its latest checkpoint)."""
    info = library.get_adapter(name, library_dir)
    loaded = ckpt.latest_checkpoint(info.path)
    if loaded is None:
        raise TailorError(f"adapter {name!r} has no checkpoint to resume from")
    return TrainConfig.from_dict(loaded.state["config"])
