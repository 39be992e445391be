"""Trainable parameters and memory of a training run, before it starts: the Train page's preview.

The bytes come from the engine's own memory model (engine/train/memory.py), fed the counts the
engine will see once the model loads: each weight's shape and type read from the safetensors
headers (a few KB, no MLX, so it can update on every keystroke), the adapters mlx-lm adds for
the chosen method, targets and layers. With the dataset's longest example it gives the same
total as the run's plan (the Started event); without it, the length is max_seq_length (an upper
bound). A config without weight files beside it falls back to shapes worked out from
config.json.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from engine.train.config import TrainConfig
from engine.train.memory import MemoryInputs, training_memory

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
GIB = 1024 ** 3
# engine/train/adapters.py ATTENTION_PREFIXES: the block-relative names "attention" means
ATTENTION_PREFIXES = ("self_attn.", "attn.", "attention.", "self_attention.")
FITS_FRACTION = 0.8  # engine/train/estimate.py: a run over 80% of the machine may not fit
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
                "BF16": 2, "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
                "BOOL": 1}
_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.(weight|bias|scales|biases)$")


@dataclass
class Estimate:
    base_params: int
    trainable_params: int
    weights_bytes: int    # every weight as loaded: the base (quantized at its size) + adapters
    training_bytes: int   # the trained weights' gradients and two Adam moments
    activation_bytes: int
    memory: dict = field(default_factory=dict)  # engine/train/memory.py's parts and total
    length: int = 0        # tokens per example the figure assumes
    bounded: bool = False  # True: no data lengths known, so max_seq_length (an upper bound)
    quantized: bool = False  # the base is (or loads) quantized

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.training_bytes + self.activation_bytes

    def fits(self, machine_bytes: int | None) -> bool:
        return not machine_bytes or self.total_bytes <= FITS_FRACTION * machine_bytes

    def summary(self, machine_bytes: int | None = None) -> str:
        text = (f"{human_count(self.trainable_params)} trainable of "
                f"{human_count(self.base_params)} parameters · "
                + (f"up to {human_bytes(self.total_bytes)} memory (examples of {self.length:,} "
                   "tokens; the dataset's own lengths give the real figure)" if self.bounded
                   else f"about {human_bytes(self.total_bytes)} memory"))
        if not self.fits(machine_bytes):
            text += (f" — more than this Mac can spare ({machine_bytes / GIB:.0f} GB): use a "
                     "smaller batch or sequence length, gradient checkpointing"
                     + ("" if self.quantized else ", or a 4-bit base"))
        return text


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: float) -> str:
    """A byte count as the engine writes it (engine/sizes.py: decimal units, as Finder shows
    them): "13.4 MB", "512 MB", "1.50 GB"; MB below a gigabyte, never "0.01 GB"."""
    from engine.sizes import format_bytes

    return format_bytes(n)


def human_tokens(n: float) -> str:
    """A token count as people read it: 134, 1,250, 2.3M (a median or percentile is rounded:
    "95% 134", not "134.25")."""
    n = float(n or 0)
    return f"{n / 1e6:.1f}M" if n >= 1e7 else f"{round(n):,}"


class ModelConfig(dict):
    """config.json's contents, remembering the folder it was read from (so the estimate can
    read the weight files' headers beside it)."""

    folder: Path | None = None


def read_model_config(folder: str | Path) -> dict:
    try:
        data = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    cfg = ModelConfig(data)
    cfg.folder = Path(folder)
    return cfg


def module_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer in one transformer block, from config.json alone."""
    h = int(cfg.get("hidden_size", 0))
    heads = int(cfg.get("num_attention_heads", 1) or 1)
    kv = int(cfg.get("num_key_value_heads", heads) or heads)
    hd = int(cfg.get("head_dim") or (h // heads if heads else 0))
    inter = int(cfg.get("intermediate_size", 4 * h))
    return {"self_attn.q_proj": (h, heads * hd), "self_attn.k_proj": (h, kv * hd),
            "self_attn.v_proj": (h, kv * hd), "self_attn.o_proj": (heads * hd, h),
            "mlp.gate_proj": (h, inter), "mlp.up_proj": (h, inter), "mlp.down_proj": (inter, h)}


@dataclass
class _Weights:
    """What the run loads: its bytes and parameter count, the linear layers of each block as
    (in, out), and whether any weight is 16-bit (the activations' width then)."""

    nbytes: int
    params: int
    blocks: dict[int, dict[str, tuple[int, int]]]
    block_bytes: dict[int, int]
    block_params: dict[int, int]
    sixteen_bit: bool


def read_safetensors_header(path: Path) -> dict:
    """The tensor table at the start of a .safetensors file ({} when unreadable)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                return {}
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return {}
    return {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def _from_headers(cfg: dict, folder: Path, quantize_bits: int) -> _Weights | None:
    tensors: dict[str, dict] = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(read_safetensors_header(f))
    if not tensors:
        return None
    # (what mlx-lm saved is what it loads; a Hugging Face file's rotary tables it drops)
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    q = cfg.get("quantization") or {}
    bits, group = int(q.get("bits") or quantize_bits or 0), int(q.get("group_size") or 64)
    w = _Weights(0, 0, {}, {}, {}, False)
    for name, t in tensors.items():
        shape, dtype = [int(d) for d in t.get("shape", [])], str(t.get("dtype", "F32"))
        n = 1
        for d in shape:
            n *= d
        size = _DTYPE_BYTES.get(dtype, 4)
        nbytes, params = n * size, n
        packed = f"{name[:-len('weight')]}scales" in tensors and q
        if packed:  # an MLX-quantized weight: 32 / bits values per uint32
            params = n * 32 // bits
        elif quantize_bits and len(shape) == 2 and shape[-1] % group == 0 \
                and name.endswith(".weight"):  # quantized on load: packed + scales and biases
            nbytes = n * quantize_bits // 8 + 2 * (n // group) * size
        w.nbytes += nbytes
        w.params += params if not name.endswith((".scales", ".biases")) or not q else 0
        w.sixteen_bit |= size == 2
        m = _BLOCK.search(name)
        if m:
            i = int(m.group(1))
            w.block_bytes[i] = w.block_bytes.get(i, 0) + nbytes
            w.block_params[i] = w.block_params.get(i, 0) + n
            if len(shape) == 2 and m.group(3) == "weight":
                cols = shape[1] * 32 // bits if packed else shape[1]
                w.blocks.setdefault(i, {})[m.group(2)] = (cols, shape[0])
    return w


def _from_config(cfg: dict, quantize_bits: int) -> _Weights | None:
    h = int(cfg.get("hidden_size", 0) or 0)
    layers = int(cfg.get("num_hidden_layers", 0) or 0)
    vocab = int(cfg.get("vocab_size", 0) or 0)
    if not (h and layers and vocab):
        return None
    shapes = module_shapes(cfg)
    per_block = sum(i * o for i, o in shapes.values()) + 2 * h
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    params = layers * per_block + embed + h
    bits = (cfg.get("quantization") or {}).get("bits") or quantize_bits
    per_weight = (bits / 8 * 1.125) if bits else 2.0  # + scales and biases per group
    return _Weights(int(params * per_weight), params, {i: dict(shapes) for i in range(layers)},
                    {i: int(per_block * per_weight) for i in range(layers)},
                    {i: per_block for i in range(layers)}, sixteen_bit=True)


def _targets(available: list[str], targets: str) -> list[str]:
    """engine/train/adapters.py target_keys, without its refusals (the run gives those)."""
    t = targets.strip()
    if t == "all-linear":
        return available
    if t == "attention":
        return [k for k in available if k.startswith(ATTENTION_PREFIXES)]
    wanted = [w.strip() for w in t.split(",") if w.strip()]
    return [k for k in available if any(k == w or k.split(".")[-1] == w for w in wanted)]


def _trainable(w: _Weights, method: str, rank: int, targets: str, num_layers: int
               ) -> tuple[int, int]:
    """(parameters, bytes) trained: mlx-lm's float32 LoRA matrices (in x r and r x out; DoRA
    adds a float32 magnitude per output) in the last ``num_layers`` blocks, or with ``full``
    every weight of those blocks."""
    order = sorted(w.blocks)
    chosen = order if num_layers in (-1, 0) else order[len(order) - min(num_layers, len(order)):]
    if method == "full":
        return (sum(w.block_params.get(i, 0) for i in chosen),
                sum(w.block_bytes.get(i, 0) for i in chosen))
    available = sorted({k for i in order for k in w.blocks[i]})
    keys = _targets(available, targets)
    params = 0
    for i in chosen:
        for k in keys:
            if k in w.blocks[i]:
                cols, rows = w.blocks[i][k]
                params += rank * (cols + rows) + (rows if method == "dora" else 0)
    return params, params * 4


def estimate(cfg: dict, settings: dict, longest: int | None = None) -> Estimate | None:
    """``settings`` holds TrainConfig fields (method, rank, targets, num_layers, batch_size,
    max_seq_length, grad_checkpoint, quantize_base; missing ones take TrainConfig's defaults).
    ``longest``: the dataset's longest training example in tokens (the data check's
    ``train_stats.length_max``), capped by max_seq_length as the run caps it. None when the
    config is unusable."""
    d = TrainConfig()
    s = {f: settings.get(f, getattr(d, f)) for f in (
        "method", "rank", "targets", "num_layers", "batch_size", "max_seq_length",
        "grad_checkpoint", "quantize_base")}
    folder = getattr(cfg, "folder", None)
    c = {**cfg.get("text_config", {}), **cfg} if "text_config" in cfg else cfg
    quantize_bits = int(s["quantize_base"] or 0)
    weights = (_from_headers(c, folder, quantize_bits) if folder is not None else None) \
        or _from_config(c, quantize_bits)
    if weights is None or not weights.blocks:
        return None
    trainable, trainable_bytes = _trainable(weights, str(s["method"]), int(s["rank"]),
                                            str(s["targets"]), int(s["num_layers"]))
    adapters = 0 if s["method"] == "full" else trainable_bytes  # added beside the base
    # the same counts, with the same fallbacks, as engine/train/estimate.py reads them
    e = cfg.get("text_config", cfg)
    hidden = int(e.get("hidden_size", 1024))
    max_len = int(s["max_seq_length"])
    length = min(longest, max_len) if longest else max_len
    mem = training_memory(MemoryInputs(
        weights_bytes=weights.nbytes + adapters, trainable_bytes=trainable_bytes,
        hidden=hidden, intermediate=int(e.get("intermediate_size", 4 * hidden)),
        layers=int(e.get("num_hidden_layers", len(weights.blocks))),
        heads=int(e.get("num_attention_heads", 8)), vocab=int(e.get("vocab_size", 32000)),
        batch_size=int(s["batch_size"]), length=length,
        grad_checkpoint=bool(s["grad_checkpoint"]),
        activation_bytes=2 if weights.sixteen_bit else 4))
    return Estimate(weights.params, trainable, mem["weights_bytes"],
                    mem["gradient_bytes"] + mem["optimizer_bytes"], mem["activation_bytes"],
                    memory=mem, length=length, bounded=not longest,
                    quantized=bool(c.get("quantization") or quantize_bits))


def longest_in(report) -> int | None:
    """The longest training example of a data check's report (a DataReport, or its wire
    dict), the ``longest`` that makes the preview the run's own figure; None without one."""
    from engine.results import DataReport

    if not report:
        return None
    return int(DataReport.coerce(report).train_stats.length_max or 0) or None
