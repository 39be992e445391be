"""Everything a merge checks before it writes a byte: the parents exist, are LoRA adapters of
one base (by the base's recorded fingerprint), fit each other layer by layer, and the new name
or output folder is free. The result is a ``MergePlan`` the writer streams through."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import library
from ..events import ErrorCode, TailorError
from .config import MergeConfig

_LEAF = re.compile(r"^(?P<module>.+)\.(?P<leaf>lora_a|lora_b|m)$")
_BLOCK = re.compile(r"^(?P<prefix>.*\blayers\.)(?P<block>\d+)\.(?P<key>.+)$")
DORA_REASON = ("DoRA rescales each output row of W + dW by a learned magnitude vector m and "
               "divides by the row's norm, so its change depends on the base weights and is "
               "not B·A; a sum of DoRA adapters is not a DoRA adapter and their magnitude "
               "vectors do not add")
DORA_HINT = ("with --fuse OUT the merge takes each DoRA adapter's exact change to the base "
             "(its fused weight minus the base's) and writes the merged model; or merge LoRA "
             "adapters")


@dataclass
class Parent:
    """One adapter going into the merge, with its LoRA factors per module (mx arrays)."""

    info: library.AdapterInfo
    adapter_config: dict
    base_dir: Path
    base_sha256: str
    weight: float
    scale: float
    rank: int
    factors: dict[str, tuple] = field(default_factory=dict)   # module -> (lora_a, lora_b)
    kind: str = "lora"                                         # or "dora"
    magnitudes: dict = field(default_factory=dict)             # DoRA: module -> m


@dataclass
class MergePlan:
    parents: list[Parent]
    cfg: MergeConfig
    name: str
    target: Path | None          # the new library folder (None with --fuse)
    fuse_out: Path | None
    modules: list[str]           # every adapted module of the result, in model order
    dims: dict[str, tuple[int, int]]   # module -> (in, out)
    rank: int                    # of the result's LoRA pair (0 with --fuse for ties/dare)
    out_scale: float
    keys: list[str]              # block-relative module names (adapter_config "keys")
    num_layers: int
    dtype: object                # of the result's factors (an mlx dtype)
    base_dir: Path = Path()

    @property
    def base(self) -> Parent:
        return self.parents[0]


def _module_order(module: str):
    m = _BLOCK.match(module)
    return (m["prefix"], int(m["block"]), m["key"]) if m else (module, -1, "")


def read_parent(name: str, weight: float, library_dir: Path | None,
                allow_dora: bool = False) -> Parent:
    """A parent's record and factors, or TailorError saying why it cannot be merged (a DoRA
    adapter unless ``allow_dora``: a fused output, where its exact change is known)."""
    import mlx.core as mx

    from ..fuse import resolve_adapter
    from ..models import model_fingerprint
    from ..models.safetensors_check import check_adapter_file

    info = library.get_adapter(name, library_dir)
    if info.status == "running":
        raise TailorError(f"adapter {name!r} is still training; nothing was written",
                          hint="wait for it to finish, or stop it first", code=ErrorCode.LOCKED)
    info, adapter_config, base_dir = resolve_adapter(info)
    kind = adapter_config.get("fine_tune_type", "lora")
    if kind == "dora" and not allow_dora:
        raise TailorError(f"adapter {name!r} is a DoRA adapter, which a merge cannot combine "
                          f"into an adapter exactly: {DORA_REASON}; nothing was written",
                          hint=DORA_HINT)
    if kind not in ("lora", "dora"):
        raise TailorError(f"adapter {name!r} is a {kind} fine-tune, not a LoRA adapter; a merge "
                          "combines LoRA weight changes; nothing was written",
                          hint="merge LoRA adapters (tailor train --method lora)")
    params = adapter_config.get("lora_parameters") or {}
    sha = ((info.manifest.get("base_model") or {}).get("sha256")
           or model_fingerprint(base_dir))  # an older record without it: the folder now
    check_adapter_file(info.weights)
    loaded = mx.load(str(info.weights))
    parent = Parent(info, adapter_config, base_dir, sha, weight,
                    float(params.get("scale", 20.0)), int(params.get("rank", 8)), kind=kind)
    pairs: dict[str, dict] = {}
    for key, value in loaded.items():
        m = _LEAF.match(key)
        if not m or (m["leaf"] == "m" and kind != "dora"):
            raise TailorError(f"{info.weights}: tensor {key!r} is not a LoRA factor "
                              "(lora_a / lora_b); nothing was written",
                              hint="this file was not written by a LoRA training run")
        if m["leaf"] == "m":
            parent.magnitudes[m["module"]] = value
        else:
            pairs.setdefault(m["module"], {})[m["leaf"]] = value
    for module, pair in pairs.items():
        a, b = pair.get("lora_a"), pair.get("lora_b")
        if a is None or b is None or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise TailorError(f"{info.weights}: module {module!r} has no matching lora_a/lora_b "
                              "pair; nothing was written",
                              hint="the adapter file is incomplete; train it again")
        if a.shape[1] != parent.rank:
            raise TailorError(f"{info.weights}: module {module!r} has rank {a.shape[1]} but "
                              f"adapter_config.json says {parent.rank}; nothing was written")
        if kind == "dora" and module not in parent.magnitudes:
            raise TailorError(f"{info.weights}: DoRA module {module!r} has no magnitude "
                              "vector (.m); nothing was written")
        parent.factors[module] = (a, b)
    if not parent.factors:
        raise TailorError(f"{info.weights} holds no LoRA factors; nothing was written")
    return parent


def _check_same_base(parents: list[Parent]) -> None:
    first = parents[0]
    for p in parents[1:]:
        if p.base_sha256 != first.base_sha256:
            raise TailorError(
                f"adapters {first.info.name!r} and {p.info.name!r} were trained on different base "
                f"models ({first.base_dir}, fingerprint {first.base_sha256[:12]}…; {p.base_dir}, "
                f"fingerprint {p.base_sha256[:12]}…); a merge adds weight changes, which only "
                "means something on one base; nothing was written",
                hint="merge adapters that share a base model (the Library's Base model column)")


def _grid(parents: list[Parent]) -> tuple[list[str], dict, list[str], int]:
    """(modules, dims, keys, num_layers) of the result: every module any parent adapts, and the
    modules of the same name in the other blocks any parent covers (as zeros for the parents
    without them), since mlx-lm adapts keys x the last num_layers blocks."""
    dims: dict[str, tuple[int, int]] = {}
    owner: dict[str, str] = {}
    for p in parents:
        for module, (a, b) in p.factors.items():
            shape = (int(a.shape[0]), int(b.shape[1]))
            if module in dims and dims[module] != shape:
                raise TailorError(
                    f"module {module} is {dims[module][0]} -> {dims[module][1]} in "
                    f"{owner[module]!r} but {shape[0]} -> {shape[1]} in {p.info.name!r}; "
                    "the adapters do not fit one model; nothing was written")
            dims.setdefault(module, shape)
            owner.setdefault(module, p.info.name)
    by_key: dict[tuple[str, str], tuple[int, int]] = {}
    blocks: dict[str, set[int]] = {}
    for module, shape in dims.items():
        m = _BLOCK.match(module)
        if m:
            by_key.setdefault((m["prefix"], m["key"]), shape)
            blocks.setdefault(m["prefix"], set()).add(int(m["block"]))
    for (prefix, key), shape in by_key.items():
        for block in blocks[prefix]:
            dims.setdefault(f"{prefix}{block}.{key}", shape)
    keys = sorted({k for _, k in by_key} | {m for m in dims if not _BLOCK.match(m)})
    num_layers = max(int(p.adapter_config.get("num_layers") or 0) for p in parents)
    return sorted(dims, key=_module_order), dims, keys, num_layers


def _result_rank(cfg: MergeConfig, parents: list[Parent]) -> int:
    live = [p for p in parents if p.weight != 0]
    if cfg.method == "concat":
        return sum(p.rank for p in live)
    return cfg.rank or max(p.rank for p in parents)


def _check_outputs(name: str, fuse_out: Path | None, base_dir: Path,
                   library_dir: Path | None) -> Path | None:
    from ..fuse import check_output_outside

    if fuse_out is not None:
        check_output_outside(fuse_out, base_dir)
        if fuse_out.exists():
            raise TailorError(f"{fuse_out} already exists; it was left untouched",
                              hint="choose a new folder name or remove the old one first",
                              code=ErrorCode.NAME_TAKEN)
        return None
    target = library.adapter_path(name, library_dir)
    if target.exists():
        raise TailorError(f"an adapter named {name!r} already exists in the library; nothing "
                          "was written", hint="choose another name for the merged adapter",
                          code=ErrorCode.NAME_TAKEN)
    return target


def plan_merge(names: list[str], cfg: MergeConfig, name: str, fuse_out: Path | None = None,
               library_dir: Path | None = None) -> MergePlan:
    """Every refusal, in the order a user would want them, before anything is written."""
    cfg.validate()
    if len(names) < 2:
        raise TailorError("a merge needs at least two adapters", hint="name two or more adapters")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TailorError(f"adapter {twice[0]!r} is named twice; give each adapter once "
                          "(and its share with --weights)")
    weights = list(cfg.weights) or [1.0] * len(names)
    if len(weights) != len(names):
        raise TailorError(f"{len(weights)} weights for {len(names)} adapters",
                          hint="give one weight per adapter, in order, e.g. --weights 0.7,0.3")
    cfg = dataclasses.replace(cfg, weights=[float(w) for w in weights])  # as recorded
    if fuse_out is None or name:
        library.validate_name(name)
    for n in names:
        library.get_adapter(n, library_dir)  # a missing parent first: the cheapest refusal
    target = None
    if fuse_out is None:
        target = _check_outputs(name, None, Path(), library_dir)
    parents = [read_parent(n, w, library_dir, allow_dora=fuse_out is not None)
               for n, w in zip(names, weights)]
    _check_same_base(parents)
    if fuse_out is not None:
        _check_outputs(name, fuse_out, parents[0].base_dir, library_dir)
    modules, dims, keys, num_layers = _grid(parents)
    if cfg.method == "ties" and cfg.density < 1:
        small = min(dims, key=lambda m: dims[m][0] * dims[m][1])
        if int(cfg.density * dims[small][0] * dims[small][1]) == 0:
            raise TailorError(f"density {cfg.density} keeps no entry of {small} "
                              f"({dims[small][0]} x {dims[small][1]})", hint="raise --density")
    live = [p for p in parents if p.weight != 0]
    scales = {p.scale for p in live}
    import mlx.core as mx

    dtypes = {f[0].dtype for p in parents for f in p.factors.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else mx.float32
    rank = _result_rank(cfg, parents)
    return MergePlan(parents, cfg, name, target, fuse_out, modules, dims, rank,
                     scales.pop() if cfg.method == "concat" and len(scales) == 1 else 1.0,
                     keys, num_layers, dtype, parents[0].base_dir)


def parent_factors(p: Parent, module: str, dims: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of ``p`` at ``module`` as numpy in their own dtype; zeros of rank ``p.rank``
    where the parent does not adapt it."""
    import mlx.core as mx

    pair = p.factors.get(module)
    if pair is None:
        return (np.zeros((dims[0], p.rank), np.float32), np.zeros((p.rank, dims[1]), np.float32))
    a, b = pair
    if a.dtype == mx.bfloat16:  # numpy has no bfloat16
        a, b = a.astype(mx.float32), b.astype(mx.float32)
    return np.array(a), np.array(b)


def parent_change(p: Parent, module: str, dims: tuple[int, int],
                  base_weight: np.ndarray | None = None, rows: tuple[int, int] | None = None
                  ) -> np.ndarray:
    """``p``'s full change to ``module``'s weight (float32, out x in; ``rows``: only rows
    r0:r1): ``scale * B.T @ A.T`` for LoRA; for DoRA its fused weight minus the base's,
    ``m / |W + dW|_row * (W + dW) - W`` as mlx-lm's ``DoRALinear.fuse`` computes it (needs
    ``base_weight``; each row on its own, so rows can be made apart)."""
    from .deltas import lora_delta

    r0, r1 = rows or (0, dims[1])
    a, b = parent_factors(p, module, dims)
    change = lora_delta(a, b[:, r0:r1], p.scale)
    if p.kind != "dora" or module not in p.factors:
        return change
    import mlx.core as mx

    w = base_weight[r0:r1]
    adapted = w + change
    del change
    m = np.array(p.magnitudes[module].astype(mx.float32))[r0:r1]
    adapted *= (m / np.linalg.norm(adapted, axis=1))[:, None]
    adapted -= w
    return adapted
