"""`export_gguf`: a model folder, or a library adapter fused on the fly, to one GGUF file.

Tensors are cut into pieces of rows (about a million values), read, converted and encoded by
a pool of threads and written in file order, so peak memory stays near a few pieces plus a
bounded run-ahead, not the model; encoding starts while the tokenizer and header are done.
The file is written under a temporary name beside the target and renamed; the free space is
checked before anything is written; every export is verified (see verify.py) and the record
is written beside the file as ``<file>.gguf.json``.
"""
from __future__ import annotations

import re
import shutil
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, check_free_space, write_json_atomic
from ..events import CancelToken, Job, Reporter, TailorError, as_job, null_reporter
from ..results import ExportResult
from .architectures import (ArchInfo, add_hparams, arch_info, gguf_name, is_mlx_quantized,
                            llama3_rope_factors, row_local, transform)
from .mixtures import BYTES_PER_WEIGHT, FILE_TYPE, QUANTS, TypePlanner, encode, nbytes_of
from .safetensors_stream import TensorRef, list_tensors
from .vocab import VocabInfo, check_pre_tokenizer, read_vocab

# Values read and encoded as one piece (2 MiB of float16): small enough that a worker's
# working set stays small, large enough that per-piece Python costs vanish.
PIECE_ELEMS = 1024 * 1024
# How far encoding may run ahead of the file: encoded bytes and pieces waiting to be written.
AHEAD_BYTES = 64 * 1024 * 1024
AHEAD_PIECES = 64


@dataclass
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order
    ggml_type: Any
    nbytes: int
    ref: TensorRef | None = None  # None: generated (rope_freqs)
    data: np.ndarray | None = None
    hf_name: str = ""


def record_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _order_key(name: str) -> tuple:
    m = re.match(r"blk\.(\d+)\.(.*)", name)
    if m:
        return (1, int(m.group(1)), m.group(2))
    first = {"token_embd.weight": 0, "rope_freqs.weight": 0}
    return (first.get(name, 2), 0, name)


def plan_tensors(a: ArchInfo, refs: list[TensorRef], quant: str) -> list[PlannedTensor]:
    import gguf

    name_map = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == a.arch), a.n_layers)
    planned: list[PlannedTensor] = []
    for ref in refs:
        name = gguf_name(a, name_map, ref.name)
        if name is not None:
            planned.append(PlannedTensor(name, ref.shape, None, 0, ref, hf_name=ref.name))
    factors = llama3_rope_factors(a)
    if factors is not None:
        planned.append(PlannedTensor("rope_freqs.weight", factors.shape, None, 0, data=factors))
    planned.sort(key=lambda p: _order_key(p.name))
    names = [p.name for p in planned]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise TailorError(f"tensors map to the same GGUF name twice: {', '.join(dup[:3])}")
    planner = TypePlanner(quant, a.n_layers, has_output="output.weight" in names)
    for p in planned:
        p.ggml_type = planner.type_for(p.name, p.shape)
        p.nbytes = nbytes_of(p.shape, p.ggml_type)
    return planned


def write_model_gguf(model_dir: Path, out_tmp: Path, quant: str, *, report: Reporter,
                     cancel: CancelToken | None, job: str, threads: int | None = None,
                     progress=None, name: str | None = None,
                     allow_tokenizer_mismatch: bool = False,
                     force_pre_tokenizer: str | None = None
                     ) -> tuple[ArchInfo, VocabInfo, list[PlannedTensor]]:
    """Write the GGUF of the HF folder ``model_dir`` to ``out_tmp`` (streamed). The tokenizer
    options go to ``read_vocab``."""
    import gguf

    from ..models.load import read_config
    from .gguf_write import FastGGUFWriter

    config = read_config(model_dir)
    a = arch_info(config, str(model_dir))
    refs = list_tensors(model_dir)
    planned = plan_tensors(a, refs, quant)
    embd = next((p for p in planned if p.name == "token_embd.weight"), None)
    if embd is None:
        raise TailorError(f"{model_dir}: no token embedding tensor found")
    total = sum(p.nbytes for p in planned)
    index = {id(p): i for i, p in enumerate(planned)}
    # Encoding starts now, while the tokenizer is read and the header written (bounded by
    # AHEAD_BYTES of encoded pieces waiting for the file).
    with _Encoded(a, planned, threads, cancel) as pieces:
        vocab = read_vocab(model_dir, config, embd.shape[0],
                           allow_tokenizer_mismatch=allow_tokenizer_mismatch,
                           force_pre_tokenizer=force_pre_tokenizer)
        w = FastGGUFWriter(str(out_tmp), a.arch)
        try:
            w.add_type(gguf.GGUFType.MODEL)
            w.add_name(name or model_dir.name)
            w.add_file_type(int(FILE_TYPE[quant]))
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
            add_hparams(w, a, len(vocab.tokens))
            vocab.add_to(w)
            for p in planned:
                w.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes,
                                  raw_dtype=p.ggml_type)
            w.write_header_to_file(path=Path(out_tmp))
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            fout = w.fout[0]
            done = written = 0
            w.write_padding(fout, fout.tell())
            for piece, data in pieces:
                p = piece.tensor
                fout.write(memoryview(np.ascontiguousarray(data)).cast("B"))
                written += data.nbytes
                del data
                if not piece.last:
                    continue
                if written != p.nbytes:  # pragma: no cover - a planner/encoder disagreement
                    raise TailorError(f"internal error: {p.name} wrote {written} bytes, "
                                      f"planned {p.nbytes}")
                w.write_padding(fout, p.nbytes)
                done += p.nbytes
                written = 0
                if progress:
                    progress(done, total, f"{p.name} ({p.ggml_type.name}) "
                                          f"{index[id(p)] + 1}/{len(planned)}")
            fout.flush()
        finally:
            w.close()
    return a, vocab, planned


@dataclass
class Piece:
    """Rows [row0, row1) of one planned tensor: the unit read, encoded and written."""

    tensor: PlannedTensor
    row0: int
    row1: int
    last: bool  # the tensor's last piece
    nbytes: int  # encoded size


def plan_pieces(a: ArchInfo, planned: list[PlannedTensor],
                piece_elems: int | None = None) -> list[Piece]:
    """Every tensor in file order, cut into row ranges of about ``piece_elems`` values
    (default PIECE_ELEMS; whole tensors where the transform needs all rows, e.g. llama's Q/K
    permutation)."""
    piece_elems = piece_elems or PIECE_ELEMS
    pieces = []
    for p in planned:
        rows = p.shape[0] if len(p.shape) > 1 else 1
        if p.data is not None or len(p.shape) < 2 or not row_local(a, p.ref.name):
            step = rows
        else:
            step = max(1, piece_elems // max(1, p.ref.row_elems))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            pieces.append(Piece(p, r0, r1, r1 == rows, p.nbytes * (r1 - r0) // rows))
    return pieces


def encode_piece(a: ArchInfo, piece: Piece) -> np.ndarray:
    """Read, convert and encode one piece (runs in a worker thread)."""
    p = piece.tensor
    if p.data is not None:
        w = p.data
    elif len(p.ref.shape) < 2:
        w = transform(a, p.ref.name, p.ref.read())  # norms and biases: float32 arithmetic
    else:
        # float16 stays float16 until the encoder (2-D transforms only move rows)
        w = transform(a, p.ref.name, p.ref.read(piece.row0, piece.row1, keep_f16=True))
    try:
        return encode(w, p.ggml_type, threads=1)
    except ValueError as e:  # NaN/inf weights, values too large for the format's scales
        raise TailorError(f"{p.hf_name or p.name} cannot be written as {p.ggml_type.name}: {e} "
                          f"(counting rows from row {piece.row0} of the tensor)",
                          hint="the model's weights hold values no GGUF file can carry in "
                               "this type; try --quant f16 or f32, or check the model") from e


class _Encoded:
    """Pieces encoded by a pool of threads (numpy and file reads release the GIL), handed
    back in file order. Encoding runs ahead of the writer by at most AHEAD_BYTES of encoded
    data (and AHEAD_PIECES pieces), so memory stays near threads x one piece plus that."""

    def __init__(self, a: ArchInfo, planned: list[PlannedTensor], threads: int | None,
                 cancel: CancelToken | None):
        import os

        self.a, self.cancel = a, cancel
        self.todo = iter(plan_pieces(a, planned))
        self.workers = max(1, int(threads or os.cpu_count() or 1))
        self.pending: deque = deque()  # (piece, future)
        self.ahead = 0  # encoded bytes submitted and not yet handed back

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gguf-encode")
        self._fill()
        return self

    def __exit__(self, *exc) -> None:
        for _, future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)  # a running piece finishes: at most one per worker
        self.pending.clear()

    def _fill(self) -> None:
        while len(self.pending) < max(2 * self.workers, AHEAD_PIECES) \
                and (self.ahead < AHEAD_BYTES or len(self.pending) < 2 * self.workers):
            piece = next(self.todo, None)
            if piece is None:
                return
            self.pending.append((piece, self.pool.submit(encode_piece, self.a, piece)))
            self.ahead += piece.nbytes

    def __iter__(self):
        while self.pending:
            if self.cancel:
                self.cancel.raise_if_cancelled()
            piece, future = self.pending.popleft()
            data = future.result()
            self.ahead -= piece.nbytes
            self._fill()
            yield piece, data


def dequantize_folder(src: Path, dst: Path) -> None:
    """An MLX-quantized model folder as a full-precision HF folder at ``dst`` (new)."""
    from mlx_lm.utils import dequantize_model

    from ..fuse import write_hf_folder
    from ..models.load import load_model

    model, _tok, config = load_model(src)
    model = dequantize_model(model)
    config = dict(config)
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    dst.mkdir()
    write_hf_folder(model, config, src, dst)


def _source_params(folder: Path) -> int:
    return sum(int(np.prod(r.shape)) for r in list_tensors(folder))


def _resolve_source(source):
    """('adapter', AdapterInfo) or ('model', Path)."""
    from ..library import AdapterInfo

    if isinstance(source, AdapterInfo):
        return "adapter", source
    if isinstance(source, Path):
        return "model", source.expanduser()
    return "adapter", str(source)


@dataclass
class ExportPlan:
    """What an export will read and write, decided (and every refusal made) before any work."""

    kind: str                      # "adapter" or "model"
    source_name: str
    out: Path
    quant: str
    adapter_only: bool
    base_dir: Path
    info: Any = None               # the adapter's AdapterInfo
    adapter_config: dict | None = None
    quantized: bool = False        # an MLX-quantized folder: dequantized first
    needed_bytes: int = 0


def plan_export(source, out: Path | str, quant: str, *, adapter_only: bool = False,
                free_bytes_fn=None, allow_tokenizer_mismatch: bool = False,
                check_tokenizer: bool = True) -> ExportPlan:
    """Check everything an export can be refused for, cheapest first, and size it: the quant,
    the file name, the source, the output's place, the architecture, the free space and
    (``check_tokenizer``) the pre-tokenizer. Raises TailorError; writes nothing."""
    from ..fuse import check_output_outside, resolve_adapter
    from ..models.load import read_config
    from ..models.resolve import check_model_folder
    from .lora_gguf import check_lora_exportable

    quant = str(quant).lower()
    if quant not in QUANTS:
        raise TailorError(f"unknown --quant {quant!r}; choose one of {', '.join(QUANTS)}")
    out = Path(out).expanduser()
    if out.suffix.lower() != ".gguf":
        raise TailorError(f"the output file {out} should end in .gguf")
    kind, src = _resolve_source(source)
    info = adapter_config = None
    if kind == "adapter":
        info, adapter_config, base_dir = resolve_adapter(src)
        from ..models.safetensors_check import check_adapter_file

        check_adapter_file(info.weights)  # a damaged adapter is named before any work
        if adapter_only:
            check_lora_exportable(info, adapter_config)
    else:
        if adapter_only:
            raise TailorError("--adapter-only needs --adapter NAME, not a model folder")
        base_dir = src
        check_model_folder(base_dir)
    check_output_outside(out, base_dir, "output file")
    if info is not None:
        check_output_outside(out, info.path, "output file")
    if out.exists():
        raise TailorError(f"{out} already exists; it was left untouched",
                          hint="choose another file name or remove the old file first")
    base_config = read_config(base_dir)
    arch_info(base_config, str(base_dir))  # refuse unsupported models up front
    quantized = is_mlx_quantized(base_config)
    # packed 4-bit weights count 8 to a uint32: a generous estimate of the real parameters
    params = _source_params(base_dir) * (8 if quantized else 1)
    if adapter_only:
        needed = int(info.weights.stat().st_size * 1.1) + (1 << 20)
    else:
        needed = int(params * BYTES_PER_WEIGHT[quant]) + (1 << 20)
        if kind == "adapter" or quantized:
            needed += params * 4  # the fused/dequantized model, in a temporary folder
    check_free_space(out.parent if out.parent.exists() else out.parent.parent, needed,
                     what=f"the {quant.upper()} GGUF file", free_bytes_fn=free_bytes_fn)
    if not adapter_only and check_tokenizer:  # before minutes of fusing
        check_pre_tokenizer(base_dir, allow_tokenizer_mismatch=allow_tokenizer_mismatch)
    return ExportPlan(kind, str(getattr(src, "name", src)), out, quant, adapter_only, base_dir,
                      info, adapter_config, quantized, needed)


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
            "chat_template": bool(vocab.chat_template), "n_vocab": len(vocab.tokens)}


def _write_gguf(plan: ExportPlan, tmp: Path, job: Job, scratch: list[Path], *, verify: bool,
                threads: int | None, allow_tokenizer_mismatch: bool,
                force_pre_tokenizer: str | None):
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
        force_pre_tokenizer=force_pre_tokenizer)
    return a, vocab, planned, _vocab_record(a, vocab), model_dir


def _verify_gguf(plan: ExportPlan, tmp: Path, job: Job, a: ArchInfo, vocab, planned,
                 model_dir: Path, meta: dict, verify: bool) -> dict:
    """Check the written file (and with ``verify``, load it in llama.cpp); the corpus
    tokenization figures go into ``meta``. -> verify.py's record."""
    from .verify import verify_export

    prog = job.progress("verify", 0.7, 1.0)
    prog(0, 1, "re-reading the file")
    verification = verify_export(
        tmp, planned=planned, arch=a, vocab=vocab, model_dir=model_dir,
        quant=plan.quant, adapter_dir=plan.info.path if plan.adapter_only else None,
        base_dir=plan.base_dir, run_llama=verify, report=job.report, job=job.name)
    prog(1, 1, "verified")
    tokenization = next((c for c in verification["checks"]
                         if c["name"] == "llama.cpp tokenization"), None)
    if tokenization is not None:  # the corpus figures, for the record
        meta["tokenizer_mismatch_rate"] = tokenization["mismatch_rate"]
        meta["tokenizer_corpus_strings"] = tokenization["strings"]
    return verification


def export_gguf(source, out: Path | str, quant: str, *, adapter_only: bool = False,
                verify: bool = True, report: Reporter = null_reporter,
                cancel: CancelToken | None = None, free_bytes_fn=None,
                job: Job | str = "export", threads: int | None = None,
                allow_tokenizer_mismatch: bool = False,
                force_pre_tokenizer: str | None = None) -> ExportResult:
    """Write ``source`` (an adapter name or AdapterInfo, or a model folder Path) as GGUF, in
    stages: plan (every refusal), write (fusing or dequantizing first when needed), verify,
    record. Returns the ExportResult (also written beside the file as ``<file>.json``); the
    command runner reports it. ``job``: a Job, or a name with ``report``/``cancel``.

    A tokenizer whose pre-tokenizer llama.cpp cannot reproduce is refused unless
    ``allow_tokenizer_mismatch`` (then the closest type is written and the measured mismatch
    rate recorded); ``force_pre_tokenizer`` writes a named type regardless (tests)."""
    job = as_job(job, report, cancel)
    t0 = time.time()
    plan = plan_export(source, out, quant, adapter_only=adapter_only,
                       free_bytes_fn=free_bytes_fn,
                       allow_tokenizer_mismatch=allow_tokenizer_mismatch,
                       check_tokenizer=force_pre_tokenizer is None)
    out = plan.out
    job.started({"source": plan.source_name, "quant": plan.quant, "out": str(out),
                 "adapter_only": adapter_only}, {"base_model": str(plan.base_dir)})
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
                force_pre_tokenizer=force_pre_tokenizer)
            meta["skipped_base_files"] = [str(f) for f in skipped_files.skipped]
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
    finally:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)
    if not verification.get("passed"):
        job.log("verification found differences: " + "; ".join(
            f"{c['name']}: {c['detail']}" for c in verification["checks"]
            if c["passed"] is False), level="warning")
    return result
