"""``--imatrix auto``: the importance matrix of a model computed in MLX over its own data,
as llama.cpp's ``llama-imatrix`` defines it (tools/imatrix/imatrix.cpp ``collect_imatrix``).

The token stream (the adapter's training split, rendered and tokenized by engine/data exactly
as training did, or a text file) is cut into chunks of ``ctx`` tokens, each run from an empty
cache with BOS as its first token when the tokenizer adds one. For every matrix
multiplication by a ``blk.*`` weight (attention, MLP, router; not ``output.weight``, not the
token embedding) the sum over tokens of each input column's squared activation is added up,
with the tokens counted; for stacked experts (llama.cpp's MUL_MAT_ID) per expert, over the
tokens routed to that expert only. MLX module names become GGUF tensor names through the
export's own tensor plan (write.plan_tensors), so the matrix names the tensors the file holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..events import Job, TailorError
from .imatrix_file import Imatrix
from .safetensors_stream import RowsFromShape

# llama-imatrix ignores plain matrix products over fewer tokens than this (imatrix.cpp:
# "why are small batches ignored (<16 tokens)?"); a shorter chunk is not run at all.
MIN_CHUNK_TOKENS = 16
# Above this size in float32 the activations are computed in the weights' own dtype.
F32_MAX_BYTES = 8 << 30
# Architectures whose tensors change column order (or are split) on the way to GGUF: a matrix
# over the MLX inputs would not line up with the file's columns.
COLUMNS_CHANGED = ("qwen35", "qwen35moe", "qwen3next", "granitehybrid")


@dataclass
class _Sums:
    """One GGUF tensor's running sums (mx float32 [n_mat, cols]) and token counts."""

    n_mat: int
    sums: object = None
    counts: object = None


@dataclass
class Collector:
    """The running sums of every tapped matrix, by GGUF tensor name."""

    entries: dict[str, _Sums] = field(default_factory=dict)

    def _entry(self, name: str, n_mat: int, cols: int) -> _Sums:
        import mlx.core as mx

        e = self.entries.get(name)
        if e is None:
            # counts as integers: a float32 count stops being exact past 2**24 tokens
            e = self.entries[name] = _Sums(n_mat, mx.zeros((n_mat, cols), mx.float32),
                                           mx.zeros((n_mat,), mx.int32))
        return e

    def add_dense(self, name: str, x) -> None:
        """A plain product: every token's input row."""
        import mlx.core as mx

        rows = x.size // x.shape[-1]
        if rows < MIN_CHUNK_TOKENS:
            return
        e = self._entry(name, 1, x.shape[-1])
        x2 = mx.square(x.astype(mx.float32)).reshape(rows, x.shape[-1]).sum(axis=0)
        e.sums = e.sums + x2[None]
        e.counts = e.counts + rows

    def add_experts(self, name: str, x, indices, n_expert: int) -> None:
        """A gathered product (SwitchLinear): row ``x[..., 0, :]`` of every (token, chosen
        expert) pair, added to that expert only (gate/up share one input across the chosen
        experts, down has one per expert: both broadcast to the indices)."""
        import mlx.core as mx

        cols = x.shape[-1]
        rows = mx.broadcast_to(x[..., 0, :], (*indices.shape, cols)).reshape(-1, cols)
        ids = indices.reshape(-1)
        e = self._entry(name, n_expert, cols)
        e.sums = e.sums.at[ids].add(mx.square(rows.astype(mx.float32)))
        e.counts = e.counts.at[ids].add(mx.ones(ids.shape, mx.int32))

    def state(self) -> list:
        return [a for e in self.entries.values() for a in (e.sums, e.counts)]

    def to_imatrix(self, datasets: list[str], chunks: int, ctx: int) -> Imatrix:
        import mlx.core as mx

        mx.eval(self.state())
        sums = {n: np.array(e.sums, dtype=np.float32).reshape(-1) for n, e in self.entries.items()}
        counts = {n: np.array(e.counts, dtype=np.float64) for n, e in self.entries.items()}
        return Imatrix(sums, counts, list(datasets), chunks, ctx)


def _tap_classes():
    """The tap modules (built on first use: MLX is imported lazily)."""
    import mlx.nn as nn

    class Tap(nn.Module):
        def __getattr__(self, key: str):
            try:
                return super().__getattr__(key)
            except AttributeError:  # model code reading the layer's own attributes
                inner = self.get("inner")
                if inner is None:
                    raise
                return getattr(inner, key)

    class DenseTap(Tap):
        def __init__(self, inner, collector: Collector, name: str):
            super().__init__()
            self.inner = inner
            self._tap = (collector, name)

        def __call__(self, x, *args, **kwargs):
            self._tap[0].add_dense(self._tap[1], x)
            return self.inner(x, *args, **kwargs)

    class ExpertTap(Tap):
        def __init__(self, inner, collector: Collector, name: str):
            super().__init__()
            self.inner = inner
            self._tap = (collector, name, int(inner["weight"].shape[0]))

        def __call__(self, x, indices, *args, **kwargs):
            collector, name, n_expert = self._tap
            collector.add_experts(name, x, indices, n_expert)
            return self.inner(x, indices, *args, **kwargs)

    return DenseTap, ExpertTap


def gguf_names(model, config: dict, source: str = "") -> dict[str, str]:
    """MLX module path -> GGUF tensor name for every weight llama-imatrix collects
    (``blk.*``), through the exporter's own plan of the model's parameters."""
    from mlx.utils import tree_flatten

    from .architectures import arch_info
    from .write import plan_tensors

    a = arch_info(config, source)
    if a.arch in COLUMNS_CHANGED:
        raise TailorError(f"{source}: an importance matrix cannot be computed for this "
                          f"{a.model_type} model yet (its tensors change column order on the "
                          "way to GGUF)", hint="compute one with llama.cpp's llama-imatrix on "
                          "the F16 GGUF and pass it with --imatrix FILE")
    refs = [_ShapeRef(n, tuple(v.shape)) for n, v in tree_flatten(model.parameters())]
    planned = plan_tensors(a, refs, "f16")
    return {p.hf_name[:-len(".weight")]: p.name for p in planned
            if p.hf_name.endswith(".weight") and p.name.startswith("blk.")
            and len(p.shape) >= 2}


@dataclass
class _ShapeRef(RowsFromShape):
    """A parameter's name and shape: all the tensor plan reads (nothing is read)."""

    name: str
    shape: tuple[int, ...]


def tap_model(model, names: dict[str, str]) -> Collector:
    """Wrap every module ``names`` lists (a linear layer, or stacked experts) so that its
    inputs are added to the returned Collector on every call."""
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

    dense_tap, expert_tap = _tap_classes()
    collector = Collector()
    taps = []
    for path, module in model.named_modules():
        name = names.get(path)
        if name is None:
            continue
        if isinstance(module, (SwitchLinear, QuantizedSwitchLinear)):
            taps.append((path, expert_tap(module, collector, name)))
        elif isinstance(module, (nn.Linear, nn.QuantizedLinear)):
            taps.append((path, dense_tap(module, collector, name)))
    if not taps:
        raise TailorError("no matrix of this model could be traced for an importance matrix",
                          hint="compute one with llama.cpp's llama-imatrix and pass it with "
                               "--imatrix FILE")
    model.update_modules(tree_unflatten(taps))
    return collector


def cut_chunks(tokens: list[int], ctx: int, bos_id: int | None,
               max_chunks: int | None = None) -> list[list[int]]:
    """The stream in chunks of ``ctx`` tokens (the last one shorter, when it holds at least
    MIN_CHUNK_TOKENS), each starting with BOS when ``bos_id`` is given, as llama-imatrix
    sets it; at most ``max_chunks``."""
    chunks = []
    for start in range(0, len(tokens), ctx):
        chunk = list(tokens[start:start + ctx])
        if len(chunk) < MIN_CHUNK_TOKENS:
            break
        if bos_id is not None:
            chunk[0] = bos_id
        chunks.append(chunk)
        if max_chunks and len(chunks) >= max_chunks:
            break
    return chunks


def in_float32(model) -> str:
    """Upcast ``model``'s floating weights to float32 when it fits in F32_MAX_BYTES, as
    llama.cpp computes activations in F32 whatever the weights (and MLX's CPU gather for
    stacked experts runs only in float32). -> the dtype the activations are computed in."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map

    weights = [v for _, v in tree_flatten(model.parameters())]
    if sum(v.size for v in weights) * 4 > F32_MAX_BYTES:
        return ", ".join(sorted({str(v.dtype).replace("mlx.core.", "") for v in weights}))
    model.update(tree_map(lambda v: v.astype(mx.float32)
                          if mx.issubdtype(v.dtype, mx.floating) else v, model.parameters()))
    return "float32"


def collect_imatrix(model, names: dict[str, str], chunks: list[list[int]], job: Job, *,
                    datasets: list[str], ctx: int) -> Imatrix:
    """Run ``model`` over ``chunks`` (each from an empty cache) and return the matrix;
    Progress per chunk, cancellable between chunks; memory: one chunk's forward pass plus
    the sums (n_mat x cols per matrix)."""
    import mlx.core as mx

    collector = tap_model(model, names)
    prog = job.progress("imatrix", 0.0, 1.0)
    prog(0, len(chunks), f"importance matrix: {len(chunks)} chunks of up to {ctx} tokens")
    for i, chunk in enumerate(chunks):
        job.cancel.raise_if_cancelled()
        # only the taps' sums are evaluated: the logits (the output matrix) never are
        model(mx.array([int(t) for t in chunk], dtype=mx.int32)[None])
        mx.eval(collector.state())
        prog(i + 1, len(chunks), f"importance matrix: chunk {i + 1}/{len(chunks)}")
    return collector.to_imatrix(datasets, len(chunks), ctx)
