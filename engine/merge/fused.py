"""``tailor merge --fuse OUT``: the base model with the merged change added to each adapted
weight (ties and dare exactly, without the SVD an adapter needs), written as the same Hugging
Face folder `tailor fuse` writes."""
from __future__ import annotations

import json

import numpy as np

from ..events import Job
from .plan import MergePlan


def write_fused(plan: MergePlan, job: Job) -> dict[str, float]:
    """Load the base (dequantized when quantized), add each layer's change in float32 and
    round once to the weight's dtype, write the folder under a temporary name; -> energy kept
    per layer (linear only)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import dequantize_model

    from ..atomic import atomic_path, check_free_space
    from ..fuse import write_hf_folder
    from ..models.folder_files import model_files
    from ..models.load import load_model
    from .run import lineage, layer_result

    progress = job.progress("merge", 0.0, 0.8)
    progress(0, 1, "loading the base model")
    model, _tokenizer, config = load_model(plan.base_dir)
    if config.get("quantization") or config.get("quantization_config"):
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    params = dict(tree_flatten(model.parameters()))
    energy: dict[str, float] = {}
    for i, module in enumerate(plan.modules):
        job.cancel.raise_if_cancelled()
        progress(i, len(plan.modules), f"merging {module}")
        key = f"{module}.weight"
        weight = params[key]
        base = np.array(weight.astype(mx.float32))
        _, _, change, kept = layer_result(plan, module, dense=True, base_weight=base)
        merged = base
        merged += change
        del change
        params[key] = mx.array(merged).astype(weight.dtype)
        model.update(tree_unflatten([(key, params[key])]))
        mx.eval(params[key])
        del merged, weight
        if kept is not None:
            energy[module] = round(kept, 6)
    job.cancel.raise_if_cancelled()
    size = sum(v.nbytes for v in params.values())
    del params
    check_free_space(plan.fuse_out.parent, size, what="the merged model")
    job.progress("merge", 0.8, 1.0)(0, 1, "writing the merged model")
    model_files(plan.base_dir).report_skipped(job.report, job.name)
    with atomic_path(plan.fuse_out, needed_bytes=size) as tmp:
        tmp.mkdir()
        skipped = write_hf_folder(model, config, plan.base_dir, tmp)
        job.cancel.raise_if_cancelled()
        (tmp / "tailor_merged.json").write_text(json.dumps(
            {"base_model": str(plan.base_dir), "name": plan.name,
             "merge": lineage(plan, energy), "skipped_base_files": skipped}, indent=2))
    job.progress("merge")(1, 1, "done")
    return energy
