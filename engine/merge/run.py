"""`tailor merge`'s work: plan (every refusal first), then one adapted layer at a time: the
parents' factors, the method's change, the result's factors (or, with ``--fuse``, the base's
weight plus the exact change), so only one layer's full-size matrices exist at once."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import __version__, library, locks, sweep
from ..events import CancelToken, Job, Reporter, as_job, null_reporter
from ..results import JobState, MergeResult
from . import deltas as D
from .config import MergeConfig
from .plan import MergePlan, parent_change, parent_factors, plan_merge


def merge_adapters(names: list[str], cfg: MergeConfig, name: str = "",
                   fuse_out: Path | str | None = None, *, report: Reporter = null_reporter,
                   cancel: CancelToken | None = None, job: Job | str = "merge",
                   library_dir: Path | None = None) -> MergeResult:
    """Merge the library adapters ``names`` (``cfg.weights``, ``cfg.method``) into the new
    adapter ``name``, or with ``fuse_out`` into a fused model folder; return what was written.

    Raises TailorError (refused before anything is written: a missing parent, different
    bases, DoRA, a taken name...) and Cancelled (nothing left behind)."""
    job = as_job(job, report, cancel)
    start = time.time()
    fuse_out = Path(fuse_out).expanduser() if fuse_out else None
    writes_adapter = plan_merge(list(names), cfg, name, fuse_out, library_dir).target is not None
    # re-entrant: `tailor merge`'s runner holds these very locks around this call (engine/cli.py)
    held = [locks.adapter_lock(n, job.name, library_dir, reentrant=True) for n in names]
    if writes_adapter:
        held.append(locks.adapter_lock(name, job.name, library_dir, reentrant=True))
    if fuse_out is not None:
        held.append(locks.output_lock(fuse_out, job.name, library_dir, reentrant=True))
    with locks.holding(*held):
        plan = plan_merge(list(names), cfg, name, fuse_out, library_dir)  # as of the locks
        # what a killed merge into the same target left (nothing live: we hold its lock)
        sweep.report_removed(sweep.sweep_output_folder(fuse_out) if fuse_out is not None
                             else sweep.sweep_adapter_folder(plan.target), job.report, job.name)
        job.started({"adapters": list(names), "name": name, "fuse": str(fuse_out or ""),
                     **cfg.to_dict()},
                    {"base_model": str(plan.base_dir), "layers": len(plan.modules),
                     "rank": plan.rank})
        if fuse_out is not None:
            from .fused import write_fused

            energy = write_fused(plan, job)
        else:
            energy = _write_adapter(plan, job)
    exact = plan.cfg.method == "concat" or fuse_out is not None and plan.cfg.method != "linear"
    return MergeResult(
        adapter="" if fuse_out else name, path=str(plan.target or ""),
        fused_path=str(fuse_out or ""), method=cfg.method, parents=list(names),
        weights=[p.weight for p in plan.parents], settings=plan.cfg.to_dict(), rank=plan.rank,
        layers=len(plan.modules), exact=exact, energy_kept=energy,
        min_energy_kept=min(energy.values()) if energy else None,
        seconds=round(time.time() - start, 3))


def layer_result(plan: MergePlan, module: str, dense: bool,
                 base_weight: np.ndarray | None = None
                 ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float | None]:
    """One module's merge: (A, B, dense change, energy kept). ``dense``: the full change is
    wanted (a fused output, ``base_weight`` its float32 base weight: DoRA parents need it);
    otherwise the LoRA pair at the plan's rank."""
    cfg, dims = plan.cfg, plan.dims[module]
    parents = plan.parents
    low_rank = cfg.method in ("concat", "linear")
    if low_rank and all(p.kind == "lora" for p in parents):
        live = [p for p in parents if p.weight != 0]  # weight 0: not in the sum at all
        factors = [(*parent_factors(p, module, dims), p.scale) for p in live]
        a, b = D.concat_factors(factors, [p.weight for p in live], plan.out_scale)
        if cfg.method == "linear":
            a, b, energy = D.low_rank_from_factors(a, b, plan.out_scale, plan.rank)
            if dense:
                return None, None, D.lora_delta(a, b, 1.0), energy
            return a, b, None, energy
        if dense:
            return None, None, D.lora_delta(a, b, plan.out_scale), None
        return a, b, None, None
    live = [p for p in parents if p.weight != 0 or not low_rank]
    weights = [p.weight for p in live]
    if low_rank:  # DoRA parents (fused output only): their exact changes, summed
        merged = np.zeros((dims[1], dims[0]), np.float32)
        for p, w in zip(live, weights):
            merged += parent_change(p, module, dims, base_weight) * np.float32(w)
        if cfg.method == "concat":
            return None, None, merged, None
        a, b, energy = D.low_rank_from_dense(merged, plan.rank)
        return None, None, D.lora_delta(a, b, 1.0), energy
    merged = D.streamed_merge(
        lambda i, r0, r1: parent_change(live[i], module, dims, base_weight, (r0, r1)),
        lambda i: parent_change(live[i], module, dims, base_weight), (dims[1], dims[0]),
        weights, cfg.method, cfg.density, cfg.dare_combine, cfg.seed, module)
    if dense:
        return None, None, merged, None
    a, b, energy = D.low_rank_from_dense(merged, plan.rank)
    return a, b, None, energy


def _write_adapter(plan: MergePlan, job: Job) -> dict[str, float]:
    """Compute every layer's pair (checking for a stop between layers), then write the
    library folder under a temporary name and rename it into place."""
    import mlx.core as mx

    from ..atomic import atomic_path, check_free_space, save_safetensors, write_json_atomic

    progress = job.progress("merge", 0.0, 0.95)
    weights: dict[str, mx.array] = {}
    energy: dict[str, float] = {}
    for i, module in enumerate(plan.modules):
        job.cancel.raise_if_cancelled()
        progress(i, len(plan.modules), f"merging {module}")
        a, b, _, kept = layer_result(plan, module, dense=False)
        weights[f"{module}.lora_a"] = mx.array(a).astype(plan.dtype)
        weights[f"{module}.lora_b"] = mx.array(b).astype(plan.dtype)
        if kept is not None:
            energy[module] = round(kept, 6)
    job.cancel.raise_if_cancelled()
    progress(len(plan.modules), len(plan.modules), "writing the adapter")
    size = sum(v.nbytes for v in weights.values())
    check_free_space(plan.target.parent, size, what="the merged adapter")
    with atomic_path(plan.target, needed_bytes=size) as tmp:
        tmp.mkdir()
        save_safetensors(tmp / "adapters.safetensors", weights, metadata={"format": "mlx"})
        write_json_atomic(tmp / "adapter_config.json", adapter_config(plan))
        library.write_manifest(tmp, manifest(plan, energy))
        job.cancel.raise_if_cancelled()  # a stop now still leaves nothing behind
    job.progress("merge")(1, 1, "done")
    return energy


def adapter_config(plan: MergePlan) -> dict:
    """mlx-lm's ``adapter_config.json`` for the result: a plain LoRA adapter."""
    return {"fine_tune_type": "lora", "num_layers": plan.num_layers,
            "lora_parameters": {"rank": plan.rank, "scale": plan.out_scale, "dropout": 0.0,
                                "keys": plan.keys},
            "model": str(plan.base_dir)}


def lineage(plan: MergePlan, energy: dict[str, float]) -> dict:
    """The record of how a merge was made: parents (with their weights and files' sha256),
    method, settings, what it kept."""
    from ..atomic import sha256_file

    exact = plan.cfg.method == "concat" or (plan.fuse_out is not None
                                           and plan.cfg.method != "linear")
    return {"method": plan.cfg.method, "settings": plan.cfg.to_dict(),
            "parents": [{"name": p.info.name, "weight": p.weight, "path": str(p.info.path),
                         "kind": p.kind, "rank": p.rank, "scale": p.scale,
                         "adapters_sha256": sha256_file(p.info.weights)}
                        for p in plan.parents],
            "rank": plan.rank, "exact": exact, "energy_kept": energy,
            "min_energy_kept": min(energy.values()) if energy else None}


def manifest(plan: MergePlan, energy: dict[str, float]) -> dict:
    """The new adapter's library record: the first parent's base (all share it), no dataset,
    and the merge's lineage."""
    import mlx.core as mx
    import mlx_lm

    now = time.time()
    base = dict(plan.base.info.manifest.get("base_model") or {"path": str(plan.base_dir)})
    base["sha256"] = plan.base.base_sha256
    return {"name": plan.name, "status": JobState.FINISHED, "base_model": base, "dataset": {},
            "settings": {"method": "lora", "rank": plan.rank},
            "adapter_config": adapter_config(plan), "merge": lineage(plan, energy),
            "loss_history": {"train": [], "valid": []}, "best_val_loss": None, "steps": None,
            "versions": {"tailor": __version__, "mlx": mx.__version__,
                         "mlx_lm": mlx_lm.__version__},
            "created": now, "started": now, "finished": now}
