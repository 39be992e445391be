"""`export_gguf`: a model folder, or a library adapter fused on the fly, to one GGUF file.

The pipeline of an export's stages: plan (plan.py: every refusal before any work), write
(write.py: fusing or dequantizing first when needed, then the streamed writer), verify
(verify.py: the file re-read and loaded in llama.cpp) and the record beside the file
(``<file>.gguf.json``). The file is written under a temporary name beside the target and
renamed.
"""
from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

from ..atomic import atomic_path, write_json_atomic
from ..events import CancelToken, Job, Reporter, TailorError, as_job, null_reporter
from ..results import ExportResult
from .architectures import ArchInfo
from .plan import ExportPlan, plan_export
from .vocab import VocabInfo
from .write import dequantize_folder, write_model_gguf

__all__ = ["ExportPlan", "ExportResult", "export_gguf", "plan_export", "record_path"]


def record_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _full_precision_folder(plan: ExportPlan, job: Job, scratch: list[Path]) -> Path:
    """The folder to read full-precision weights from: the base itself, or a temporary folder
    (appended to ``scratch``, which the caller removes) holding the dequantized model or the
    adapter fused into its base."""
    from ..fuse import fused_model, write_hf_folder

    out = plan.out
    if plan.kind == "model" and plan.quantized:
        prog = job.progress("dequantize", 0.0, 0.2)
        prog(0, 1, "dequantizing the MLX-quantized model")
        scratch.append(out.parent / f".{out.name}.dequantized-{uuid.uuid4().hex[:8]}")
        dequantize_folder(plan.base_dir, scratch[-1])
        prog(1, 1, "dequantized")
        return scratch[-1]
    if plan.kind == "adapter":
        prog = job.progress("fuse", 0.0, 0.2)
        prog(0, 1, "fusing the adapter into its base")
        model, config = fused_model(plan.info, plan.adapter_config, plan.base_dir)
        scratch.append(out.parent / f".{out.name}.fused-{uuid.uuid4().hex[:8]}")
        scratch[-1].mkdir()
        write_hf_folder(model, config, plan.base_dir, scratch[-1])
        del model
        prog(1, 1, "fused")
        job.cancel.raise_if_cancelled()
        return scratch[-1]
    return plan.base_dir


def _vocab_record(a: ArchInfo, vocab: VocabInfo) -> dict:
    """The export record's tokenizer facts."""
    return {"architecture": a.arch, "tokenizer": vocab.model,
            "pre_tokenizer": vocab.pre, "pre_tokenizer_source": vocab.pre_source,
            "pre_tokenizer_match": vocab.pre_record,
            "pre_tokenizer_mismatch_allowed": vocab.pre_mismatch_allowed,
            "eos_token": vocab.eos_text, "bos_id": vocab.bos_id,
            "eos_id": vocab.eos_id, "add_bos": vocab.add_bos,
            "chat_template": bool(vocab.chat_template), "n_vocab": len(vocab.tokens),
            # which tokenizer the vocabulary came from, and why (the train record has the same)
            "tokenizer_choice": vocab.tokenizer_choice}


def _write_gguf(plan: ExportPlan, tmp: Path, job: Job, scratch: list[Path], *, verify: bool,
                threads: int | None, allow_tokenizer_mismatch: bool,
                force_pre_tokenizer: str | None, imatrix=None):
    """Write the plan's GGUF at ``tmp`` -> (arch, vocab or None, planned tensors, record
    metadata, the folder its weights came from)."""
    from .lora_gguf import write_lora_gguf

    if plan.adapter_only:
        prog = job.progress("export", 0.0, 0.5)
        a, planned, meta = write_lora_gguf(plan.info, plan.adapter_config, plan.base_dir, tmp,
                                           plan.quant)
        prog(1, 1, "adapter written")
        return a, None, planned, meta, plan.base_dir
    model_dir = _full_precision_folder(plan, job, scratch)
    prog = job.progress("export", 0.2 if scratch else 0.0, 0.7 if verify else 1.0)
    a, vocab, planned = write_model_gguf(
        model_dir, tmp, plan.quant, report=job.report, cancel=job.cancel, job=job.name,
        threads=threads, progress=prog,
        name=plan.info.name if plan.info is not None else model_dir.name,
        allow_tokenizer_mismatch=allow_tokenizer_mismatch,
        force_pre_tokenizer=force_pre_tokenizer, imatrix=imatrix)
    return a, vocab, planned, _vocab_record(a, vocab), model_dir


def _verify_gguf(plan: ExportPlan, tmp: Path, job: Job, a: ArchInfo, vocab, planned,
                 model_dir: Path, meta: dict, verify: bool) -> dict:
    """Check the written file (and with ``verify``, load it in llama.cpp); the corpus
    tokenization figures go into ``meta``. -> verify.py's record."""
    from .verify import verify_export

    prog = job.progress("verify", 0.7, 0.85 if verify and not plan.adapter_only else 1.0)
    prog(0, 1, "re-reading the file")
    verification = verify_export(
        tmp, planned=planned, arch=a, vocab=vocab, model_dir=model_dir,
        quant=plan.quant, adapter_dir=plan.info.path if plan.adapter_only else None,
        base_dir=plan.base_dir, run_llama=verify, report=job.report, job=job.name)
    prog(1, 1, "verified")
    if verification["llama_cpp"] and not plan.adapter_only:  # KL and perplexity (quality.py)
        from .quality import measure_quality

        verification["quality"] = measure_quality(tmp, model_dir=model_dir,
                                                  base_dir=plan.base_dir, info=plan.info,
                                                  job=job.nested(0.85, 1.0))
    tokenization = next((c for c in verification["checks"]
                         if c["name"] == "llama.cpp tokenization"), None)
    if tokenization is not None:  # the corpus figures, for the record
        meta["tokenizer_mismatch_rate"] = tokenization["mismatch_rate"]
        meta["tokenizer_corpus_strings"] = tokenization["strings"]
    return verification


def _list_export(plan: ExportPlan, out: Path, result: ExportResult, job: Job) -> None:
    """Add the written file to the adapter's exports list (wherever it went), so parity finds
    it and the Export page lists its size, time and quality; a list that cannot be written
    is said, never fails an export that is done."""
    from ..adapter_exports import EXPORTS_FILE, record_export

    try:
        matrix = result.metadata.get("imatrix")  # (imatrix_plan.imatrix_record)
        record_export(plan.info.path, out, quant=plan.quant, kind=result.kind, job=job.name,
                      seconds=result.seconds, quality=result.verification.get("quality"),
                      imatrix=(matrix.get("path") or "given") if matrix else "")
    except (TailorError, OSError) as e:
        job.log(f"{out} was not added to {plan.info.path / EXPORTS_FILE} ({e}); "
                f"`tailor eval --parity` finds it only with --gguf {out}", level="warning")


def export_gguf(source, out: Path | str, quant: str, *, adapter_only: bool = False,
                verify: bool = True, report: Reporter = null_reporter,
                cancel: CancelToken | None = None, free_bytes_fn=None,
                job: Job | str = "export", threads: int | None = None,
                allow_tokenizer_mismatch: bool = False,
                force_pre_tokenizer: str | None = None, listed: bool = True,
                imatrix=None) -> ExportResult:
    """Write ``source`` (an adapter name or AdapterInfo, or a model folder Path) as GGUF, in
    stages: plan (every refusal), write (fusing or dequantizing first when needed), verify,
    record. Returns the ExportResult (also written beside the file as ``<file>.json``); the
    command runner reports it. ``job``: a Job, or a name with ``report``/``cancel``.

    A tokenizer whose pre-tokenizer llama.cpp cannot reproduce is refused unless
    ``allow_tokenizer_mismatch`` (then the closest type is written and the measured mismatch
    rate recorded); ``force_pre_tokenizer`` writes a named type regardless (tests). ``listed``:
    add the file to the adapter's exports list (engine/adapter_exports.py; off for a staged
    copy that is removed after, as `tailor push` makes). Holds the adapter's and the output's
    locks throughout (engine/locks.py). ``imatrix``: an importance matrix (GGUF tensor name ->
    float32 weights per input column, [n_expert, n_cols] for stacked experts: what
    llama-quantize passes as quant_weights) for the encoders, as llama-quantize --imatrix
    uses it (engine/export/imatrix_plan.py), or a callable computing it (``--imatrix auto``:
    run after Started on the first part of the bar); None or empty: none."""
    from ..library import reading

    job = as_job(job, report, cancel)
    with reading(source, Path(out).expanduser(), job.name):
        return _export(source, out, quant, job, adapter_only=adapter_only, verify=verify,
                       free_bytes_fn=free_bytes_fn, threads=threads,
                       allow_tokenizer_mismatch=allow_tokenizer_mismatch,
                       force_pre_tokenizer=force_pre_tokenizer, listed=listed,
                       imatrix=imatrix)


def _export(source, out: Path | str, quant: str, job: Job, *, adapter_only: bool, verify: bool,
            free_bytes_fn, threads: int | None, allow_tokenizer_mismatch: bool,
            force_pre_tokenizer: str | None, listed: bool = True,
            imatrix=None) -> ExportResult:
    t0 = time.time()
    plan = plan_export(source, out, quant, adapter_only=adapter_only,
                       free_bytes_fn=free_bytes_fn,
                       allow_tokenizer_mismatch=allow_tokenizer_mismatch,
                       check_tokenizer=force_pre_tokenizer is None)
    out = plan.out
    job.started({"source": plan.source_name, "quant": plan.quant, "out": str(out),
                 "adapter_only": adapter_only}, {"base_model": str(plan.base_dir)})
    if plan.warning and not imatrix:  # (the Q2_K/Q3_K advice to use an importance matrix)
        job.log(plan.warning, level="warning")
    if callable(imatrix):  # --imatrix auto (imatrix_source.PendingImatrix): the first stage
        imatrix, job = imatrix(job.nested(0.0, imatrix.share)), job.nested(imatrix.share, 1.0)
    from ..models.folder_files import model_files

    skipped_files = model_files(plan.base_dir)  # files linked out of the base: never read
    skipped_files.report_skipped(job.report, job.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch: list[Path] = []  # the fused or dequantized folder, removed at the end
    try:
        with atomic_path(out, needed_bytes=plan.needed_bytes) as tmp:
            a, vocab, planned, meta, model_dir = _write_gguf(
                plan, tmp, job, scratch, verify=verify, threads=threads,
                allow_tokenizer_mismatch=allow_tokenizer_mismatch,
                force_pre_tokenizer=force_pre_tokenizer, imatrix=imatrix)
            meta["skipped_base_files"] = [str(f) for f in skipped_files.skipped]
            if imatrix and not adapter_only:
                from .imatrix_plan import imatrix_record

                meta["imatrix"] = imatrix_record(imatrix, planned)
            verification = _verify_gguf(plan, tmp, job, a, vocab, planned, model_dir, meta,
                                        verify)
            size = tmp.stat().st_size
        result = ExportResult(
            path=out, quant=plan.quant, size_bytes=size, verification=verification,
            source=plan.source_name, kind="adapter" if adapter_only else "model",
            seconds=round(time.time() - t0, 3),
            tensors=[{"name": p.name, "shape": list(p.shape), "type": p.ggml_type.name}
                     for p in planned],
            metadata=meta, tensor_count=len(planned))
        write_json_atomic(record_path(out), result.to_dict())
        if listed and plan.info is not None:
            _list_export(plan, out, result, job)
    finally:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)
    failed = [f"{c['name']}: {c['detail']}" for c in verification["checks"]
              if c["passed"] is False]
    if failed:
        job.log("verification found differences: " + "; ".join(failed), level="warning")
    elif not verification.get("passed"):
        job.log(f"{out}: {verification.get('note')}", level="warning")
    return result
