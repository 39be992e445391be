"""The GGUF writer: a model folder's tensors planned (GGUF names, types, sizes) and streamed
into one file with its metadata and tokenizer.

Tensors are cut into pieces of rows (about a million values), read, converted and encoded by
a pool of threads and written in file order, so peak memory stays near a few pieces plus a
bounded run-ahead, not the model; encoding starts while the tokenizer and header are done.
A large export encodes in worker processes instead, each piece written in place
(piece_processes.py).
Used by the export pipeline (gguf_export.py) and by verify.py (an F32 base for an adapter's
check); it imports neither.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..events import CancelToken, Log, Reporter, TailorError
from .architectures import (ArchInfo, add_hparams, arch_info, generated_tensors, gguf_name,
                            row_local, row_transform)
from .experts import stack_experts
from .encoders import COPY_LIKE_TYPE_NAMES
from .mixtures import FILE_TYPE, TypePlanner, nbytes_of
from .piece_processes import PROCESS_MIN_VALUES, WorkerFailed, WorkerProcesses
from .pieces import PieceJob
from .safetensors_stream import TensorRef, list_tensors
from .vocab import VocabInfo, read_vocab

# Values read and encoded as one piece (2 MiB of float16): small enough that a worker's
# working set stays small, large enough that per-piece Python costs vanish.
PIECE_ELEMS = 1024 * 1024
# How far encoding may run ahead of the file: encoded bytes and pieces waiting to be written.
# 16 MiB: an F16 export's pieces are as large as what they read, and 64 MiB of them put the
# peak at 2.1x the largest tensor of a 0.4B llama (1.0x now); 16 MiB of Q4 pieces are ~55M
# values, enough to overlap the tokenizer (Q4_K_M CPU and wall unchanged).
AHEAD_BYTES = 16 * 1024 * 1024
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
    importance: np.ndarray | None = None  # importance-matrix rows [n_mat, cols] (imatrix_plan)


def _order_key(name: str) -> tuple:
    m = re.match(r"blk\.(\d+)\.(.*)", name)
    if m:
        return (1, int(m.group(1)), m.group(2))
    first = {"token_embd.weight": 0, "rope_freqs.weight": 0, "rope_factors_long.weight": 0,
             "rope_factors_short.weight": 0}
    return (first.get(name, 2), 0, name)


def plan_tensors(a: ArchInfo, refs: list[TensorRef], quant: str,
                 imatrix=None) -> list[PlannedTensor]:
    """The file's tensors in order with their types; ``imatrix`` (GGUF name -> per-column
    weights, llama.cpp's quant_weights) switches the mixture rules that differ with a matrix
    and gives each tensor encoded with it its rows (imatrix_plan)."""
    import gguf

    name_map = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == a.arch), a.n_layers)
    planned: list[PlannedTensor] = []
    if a.arch in ("qwen35", "qwen35moe", "qwen3next"):
        from .qwen35 import qwen35_refs

        refs = qwen35_refs(a.config, refs, reorder=a.arch != "qwen3next")
    if a.arch == "granitehybrid":
        from .granite_hybrid import granite_hybrid_refs

        refs = granite_hybrid_refs(a.config, refs)
    if a.arch == "gemma4":
        from .gemma4 import gemma4_refs

        refs = gemma4_refs(a.config, refs)
    for ref in stack_experts(refs):  # MoE: one tensor per layer's experts, for every caller
        name = gguf_name(a, name_map, ref.name)
        if name is not None:
            planned.append(PlannedTensor(name, ref.shape, None, 0, ref, hf_name=ref.name))
    for gen_name, data in generated_tensors(a):  # rope_freqs, longrope's factor tables
        planned.append(PlannedTensor(gen_name, data.shape, None, 0, data=data))
    planned.sort(key=lambda p: _order_key(p.name))
    names = [p.name for p in planned]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise TailorError(f"tensors map to the same GGUF name twice: {', '.join(dup[:3])}")
    planner = TypePlanner(quant, a.n_layers, has_output="output.weight" in names,
                          n_gqa=a.n_head // a.n_kv_head, n_expert=a.n_expert,
                          has_imatrix=bool(imatrix))
    for p in planned:
        p.ggml_type = planner.type_for(p.name, p.shape)
        p.nbytes = nbytes_of(p.shape, p.ggml_type)
    if imatrix:
        from .imatrix_plan import attach_importance

        attach_importance(planned, imatrix)
    return planned


def write_model_gguf(model_dir: Path, out_tmp: Path, quant: str, *, report: Reporter,
                     cancel: CancelToken | None, job: str, threads: int | None = None,
                     progress=None, name: str | None = None,
                     allow_tokenizer_mismatch: bool = False,
                     force_pre_tokenizer: str | None = None, imatrix=None,
                     process_min_values: int | None = None
                     ) -> tuple[ArchInfo, VocabInfo, list[PlannedTensor]]:
    """Write the GGUF of the HF folder ``model_dir`` to ``out_tmp`` (streamed). The tokenizer
    options go to ``read_vocab``; ``imatrix`` to plan_tensors (and its quantize.imatrix.*
    keys, if it has gguf_metadata(), into the file as llama-quantize writes them).
    ``process_min_values``: the values from which more than one thread means worker
    processes (default PROCESS_MIN_VALUES)."""
    import gguf

    from ..models.load import read_config
    from .gguf_write import FastGGUFWriter

    config = read_config(model_dir)
    a = arch_info(config, str(model_dir))
    refs = list_tensors(model_dir)
    planned = plan_tensors(a, refs, quant, imatrix)
    embd = next((p for p in planned if p.name == "token_embd.weight"), None)
    if embd is None:
        raise TailorError(f"{model_dir}: no token embedding tensor found")
    # Encoding starts now, while the tokenizer is read and the header written (bounded by
    # AHEAD_BYTES of encoded pieces waiting for the file); worker processes start now and
    # take pieces once the header fixes where the tensor data begins.
    with _Encoded(a, planned, threads, cancel, out_tmp, process_min_values) as pieces:
        if pieces.processes is not None:
            report(Log(job=job, message=f"encoding in {pieces.workers} worker processes"))
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
            if imatrix:
                from .imatrix_plan import add_imatrix_metadata

                add_imatrix_metadata(w, imatrix)
            for p in planned:
                w.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes,
                                  raw_dtype=p.ggml_type)
            w.write_header_to_file(path=Path(out_tmp))
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            fout = w.fout[0]
            w.write_padding(fout, fout.tell())
            pieces.start(fout, w.data_alignment)
            _write_tensor_data(w, fout, pieces, planned, progress)
            fout.flush()
        finally:
            w.close()
    return a, vocab, planned


def _write_tensor_data(w, fout, pieces: "_Encoded", planned: list[PlannedTensor],
                       progress) -> None:
    """Every piece into the file in order (or counted, where a worker process wrote it in
    place), each tensor checked against its planned size and followed by its padding."""
    total = sum(p.nbytes for p in planned)
    index = {id(p): i for i, p in enumerate(planned)}
    done = written = 0
    for piece, data in pieces:
        p = piece.tensor
        if isinstance(data, int):  # a worker process wrote it in place
            written += data
        else:
            fout.write(memoryview(np.ascontiguousarray(data)).cast("B"))
            written += data.nbytes
        del data
        if not piece.last:
            continue
        if written != p.nbytes:  # pragma: no cover - a planner/encoder disagreement
            raise TailorError(f"internal error: {p.name} wrote {written} bytes, "
                              f"planned {p.nbytes}")
        if pieces.processes is None:
            w.write_padding(fout, p.nbytes)  # (in place: holes, read as zeros)
        done += p.nbytes
        written = 0
        if progress:
            progress(done, total, f"{p.name} ({p.ggml_type.name}) "
                                  f"{index[id(p)] + 1}/{len(planned)}")


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


def piece_job(a: ArchInfo, piece: Piece) -> PieceJob:
    """The piece as a self-contained job (pieces.PieceJob: read, transform, encode)."""
    p = piece.tensor
    weights = None
    if p.importance is not None:  # experts: the piece's rows are experts row0..row1-1
        weights = p.importance[piece.row0:piece.row1] if len(p.shape) == 3 else p.importance[0]
    source = p.data if p.data is not None else p.ref
    transform = None if p.data is not None else row_transform(a, p.ref.name)
    return PieceJob(source, piece.row0, piece.row1, transform, p.ggml_type.name, weights,
                    p.hf_name or p.name)


def _worker_answer(failed: WorkerFailed) -> Exception:
    """The exception a worker process's answer stands for, as the writer's own threads would
    have raised it."""
    from ..events import ErrorCode

    kind, *rest = failed.reply
    if kind == "refused":
        return TailorError(*rest)
    if kind == "oserror":
        return OSError(*rest)
    if kind == "error":
        message, hint, code = rest
        return TailorError(message, hint, ErrorCode(code) if code else None)
    code, last_words = rest
    return TailorError(f"a GGUF encoding worker process ended unexpectedly (exit code {code})"
                       + (f": {last_words}" if last_words else ""),
                       hint="the machine may be out of memory; try again with --threads 1, "
                            "which encodes in this process", code=ErrorCode.OUT_OF_MEMORY)


def _picklable(planned: list[PlannedTensor]) -> bool:
    """Whether every tensor reference can go to a worker process (a reference changing its
    tensor by a local function, as Qwen3.5's, cannot: those exports keep the threads)."""
    import pickle

    try:
        pickle.dumps([(p.ref, p.data) for p in planned])
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


class _Encoded:
    """Pieces encoded by a pool of threads (numpy and file reads release the GIL), handed
    back in file order. Encoding runs ahead of the writer by at most AHEAD_BYTES of encoded
    data (and AHEAD_PIECES pieces), so memory stays near threads x one piece plus that.

    A large export (PROCESS_MIN_VALUES, not counting copy-like types: F16, Q8_0) in more
    than one thread is encoded by worker processes instead (piece_processes.py: threads of
    one process wait on each other's GIL): they write each piece in place once ``start``
    gives where the tensor data begins, and the pieces come back as the bytes written."""

    def __init__(self, a: ArchInfo, planned: list[PlannedTensor], threads: int | None,
                 cancel: CancelToken | None, out_tmp: Path | None = None,
                 process_min_values: int | None = None):
        import os

        self.a, self.cancel, self.planned = a, cancel, planned
        pieces = plan_pieces(a, planned)
        self.todo = iter(pieces)
        self.workers = max(1, min(int(threads or os.cpu_count() or 1), len(pieces)))
        self.pending: deque = deque()  # (piece, future)
        self.ahead = 0  # encoded bytes submitted and not yet handed back
        self.processes: WorkerProcesses | None = None
        self.path, self.offsets, self.started = str(out_tmp), {}, False
        least = PROCESS_MIN_VALUES if process_min_values is None else process_min_values
        values = sum(int(np.prod(p.shape)) for p in planned
                     if len(p.shape) > 1 and p.ggml_type.name not in COPY_LIKE_TYPE_NAMES)
        if out_tmp is not None and self.workers > 1 and values >= least \
                and _picklable(planned):
            try:
                self.processes = WorkerProcesses(self.workers)  # they import meanwhile
            except OSError:  # no interpreter to start (an embedded Python): the threads
                self.processes = None

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gguf-encode")
        if self.processes is None:
            self.started = True
            self._fill()
        return self

    def __exit__(self, *exc) -> None:
        for _, future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)  # a running piece finishes: at most one per worker
        self.pending.clear()
        if self.processes is not None:
            self.processes.close()

    def start(self, fout, alignment: int) -> None:
        """The tensor data begins at ``fout``'s position. With worker processes: the file is
        made its final size (the padding between tensors stays a hole, which reads as zeros)
        and the workers get their pieces, each with its offset."""
        if self.started:
            return
        import os

        at = fout.tell()
        for p in self.planned:
            self.offsets[id(p)] = at
            at += (p.nbytes + alignment - 1) // alignment * alignment
        fout.flush()
        os.ftruncate(fout.fileno(), at)
        self.started = True
        self._fill()

    def _submit(self, piece: Piece):
        job = piece_job(self.a, piece)
        if self.processes is None:
            return self.pool.submit(encode_piece_job, job)
        offset = self.offsets[id(piece.tensor)]
        self.offsets[id(piece.tensor)] += piece.nbytes  # the tensor's next piece
        return self.pool.submit(self.processes.run, job, self.path, offset)

    def _fill(self) -> None:
        while len(self.pending) < max(2 * self.workers, AHEAD_PIECES) \
                and (self.ahead < AHEAD_BYTES or len(self.pending) < 2 * self.workers):
            piece = next(self.todo, None)
            if piece is None:
                return
            self.pending.append((piece, self._submit(piece)))
            self.ahead += piece.nbytes

    def __iter__(self):
        while self.pending:
            if self.cancel:
                self.cancel.raise_if_cancelled()
            piece, future = self.pending.popleft()
            try:
                data = future.result()
            except WorkerFailed as failed:
                raise _worker_answer(failed) from None
            self.ahead -= piece.nbytes
            self._fill()
            yield piece, data


def encode_piece_job(job: PieceJob) -> np.ndarray:
    """Read, convert and encode one piece in this process (runs in a worker thread)."""
    try:
        return job.encode()
    except ValueError as e:  # NaN/inf weights, values too large for the format's scales
        raise TailorError(*job.refusal(str(e))) from e


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
