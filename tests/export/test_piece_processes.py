"""The writer's worker processes (piece_processes.py): a large export in several threads is
encoded by processes that write each piece in place; the file must be the one the writer's
own thread writes, and every failure in a worker must reach the user as the same message."""
from __future__ import annotations

import numpy as np
import pytest

from engine.events import ErrorCode, ListReporter, Log, TailorError
from engine.export import write as writer
from engine.export.piece_processes import WorkerFailed, WorkerProcesses
from engine.tiny_models import cached_tiny_model
from tests.conftest import snapshot_tree

from .helpers import f16_copy, nan_copy


def _write(model, out, quant, *, threads, processes, imatrix=None) -> list:
    events = ListReporter()
    writer.write_model_gguf(model, out, quant, report=events, cancel=None, job="t",
                            threads=threads, process_min_values=0 if processes else None,
                            imatrix=imatrix)
    return [e.message for e in events.events if isinstance(e, Log)]


@pytest.mark.parametrize("kind,quant", [
    ("llama3", "q4_k_m"),  # Q/K rows permuted whole; 64 wide: Q5_0/Q8_0 fallbacks
    ("qwen2", "q2_k"),  # biases (1-D, float32), Q4_0 fallbacks
    ("gemma", "q8_0"),  # norms + 1 on the way
    ("qwen3_moe", "q6_k"),  # experts stacked from one tensor per expert
    ("llama3", "f16"),
])
def test_worker_processes_write_the_file_the_writers_own_thread_writes(kind, quant, tmp_path):
    m16 = f16_copy(cached_tiny_model(kind), tmp_path / "m16")
    assert _write(m16, tmp_path / "one.gguf", quant, threads=1, processes=True) == []
    logs = _write(m16, tmp_path / "procs.gguf", quant, threads=2, processes=True)
    assert logs == ["encoding in 2 worker processes"]
    assert (tmp_path / "procs.gguf").read_bytes() == (tmp_path / "one.gguf").read_bytes()


def test_importance_rows_reach_the_workers(tmp_path):
    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.models.load import read_config

    model = cached_tiny_model("llama3")
    a = arch_info(read_config(model), str(model))
    rng = np.random.default_rng(0)
    matrix = {p.name: rng.uniform(0.1, 5.0, p.shape[-1]).astype(np.float32)
              for p in writer.plan_tensors(a, list_tensors(model), "q2_k")
              if p.name.startswith("blk.") and len(p.shape) == 2}
    _write(model, tmp_path / "one.gguf", "q2_k", threads=1, processes=True, imatrix=matrix)
    _write(model, tmp_path / "two.gguf", "q2_k", threads=2, processes=True, imatrix=matrix)
    _write(model, tmp_path / "plain.gguf", "q2_k", threads=1, processes=True)
    assert (tmp_path / "two.gguf").read_bytes() == (tmp_path / "one.gguf").read_bytes()
    assert (tmp_path / "two.gguf").read_bytes() != (tmp_path / "plain.gguf").read_bytes()


def test_small_exports_keep_the_threads(tmp_path):
    model = cached_tiny_model("llama3")
    assert _write(model, tmp_path / "m.gguf", "q8_0", threads=2, processes=False) == []


@pytest.mark.parametrize("quant,processes", [("q4_0", True), ("q8_0", False), ("f16", False)])
def test_only_types_that_cost_more_than_a_copy_count_toward_processes(quant, processes,
                                                                       tmp_path):
    events = ListReporter()  # one value to encode in a non-copy type is enough here
    writer.write_model_gguf(cached_tiny_model("llama3"), tmp_path / "m.gguf", quant,
                            report=events, cancel=None, job="t", threads=2,
                            process_min_values=1)
    logs = [e.message for e in events.events if isinstance(e, Log)]
    assert logs == (["encoding in 2 worker processes"] if processes else [])


def test_tensors_changed_by_a_local_function_keep_the_threads(tmp_path):
    # Qwen3.5's linear-attention tensors are reordered by closures no worker can receive
    model = cached_tiny_model("qwen3_5")
    assert _write(model, tmp_path / "two.gguf", "q8_0", threads=2, processes=True) == []
    _write(model, tmp_path / "one.gguf", "q8_0", threads=1, processes=True)
    assert (tmp_path / "two.gguf").read_bytes() == (tmp_path / "one.gguf").read_bytes()


def test_nan_in_a_worker_is_refused_naming_the_tensor_and_row(tmp_path):
    model = tmp_path / "model"
    name = nan_copy(cached_tiny_model("qwen2"), model)
    before = snapshot_tree(model)
    with pytest.raises(TailorError, match=f"{name} cannot be written as Q8_0: Q8_0: row 5 "
                                          "holds a NaN") as e:
        _write(model, tmp_path / "m.gguf", "q8_0", threads=2, processes=True)
    assert "--quant f16 or f32" in e.value.hint
    assert snapshot_tree(model) == before


def test_a_file_cut_short_under_a_worker_is_the_readers_own_message(tmp_path):
    # (the export checks every header first; this is a file cut while it is being read)
    from engine.export.pieces import PieceJob
    from engine.export.safetensors_stream import TensorRef

    short = tmp_path / "model.safetensors"
    short.write_bytes(bytes(100))
    ref = TensorRef("model.layers.0.mlp.up_proj.weight", short, "F16", (4, 64), 8, 512)
    workers = WorkerProcesses(1)
    try:
        with pytest.raises(WorkerFailed) as failed:
            workers.run(PieceJob(ref, 0, 4, None, "Q8_0", label=ref.name),
                        str(tmp_path / "out"), 0)
    finally:
        workers.close()
    error = writer._worker_answer(failed.value)
    assert isinstance(error, TailorError) and error.code == ErrorCode.BAD_INPUT
    assert error.message == f"{short} is truncated (tensor {ref.name})"
    assert error.hint == "download or copy the model again"
    assert short.read_bytes() == bytes(100)


def test_a_worker_that_dies_is_a_message_with_a_hint(tmp_path):
    from engine.export.pieces import PieceJob

    workers = WorkerProcesses(1)
    try:
        workers.workers[0].proc.kill()
        workers.workers[0].proc.wait()
        job = PieceJob(np.zeros((2, 32), np.float32), 0, 2, None, "Q8_0", label="blk.0.x")
        with pytest.raises(WorkerFailed) as failed:
            workers.run(job, str(tmp_path / "f"), 0)
    finally:
        workers.close()
    error = writer._worker_answer(failed.value)
    assert isinstance(error, TailorError) and error.code == ErrorCode.OUT_OF_MEMORY
    assert "encoding worker process ended unexpectedly (exit code -9)" in error.message
    assert "--threads 1" in error.hint


def test_a_full_disk_in_a_worker_is_the_writers_own_os_error():
    error = writer._worker_answer(WorkerFailed(("oserror", 28, "No space left on device",
                                                "/x/m.gguf.tmp")))
    assert isinstance(error, OSError) and error.errno == 28 and error.filename == "/x/m.gguf.tmp"


def test_a_stop_ends_the_workers_after_their_running_piece(tmp_path):
    from engine.events import CancelToken, Cancelled

    model = f16_copy(cached_tiny_model("llama3"), tmp_path / "m16")
    cancel = CancelToken()
    seen = []

    def progress(done, total, label):
        seen.append(label)
        cancel.cancel()

    with pytest.raises(Cancelled):
        writer.write_model_gguf(model, tmp_path / "m.gguf", "q4_k_m", report=ListReporter(),
                                cancel=cancel, job="t", threads=2, progress=progress,
                                process_min_values=0)
    assert len(seen) == 1  # no piece handed back after the stop
