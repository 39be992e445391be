"""Where export verification's tolerances come from (engine/export/verify.py, TOLERANCES).

Exports every fixture architecture (and any --model folder or --adapter you add) to every
type, loads each file in llama.cpp (F32 KV cache, as verification does) and compares the
next-token logits of the verification prompts with MLX's on the source model. A copy of the
tiny Llama 3 with two blocks' down_proj swapped stands in for a broken exporter: it must fail
every type, and every good model must pass.

Per type it prints the lowest strict argmax agreement, the lowest agreement with near-ties
counted, the largest relative logit difference, and the broken file's figures.

    .venv/bin/python bench/verify_tolerances.py
    .venv/bin/python bench/verify_tolerances.py --adapter my-style --model ~/models/qwen2.5-0.5b
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.export.gguf_export import export_gguf  # noqa: E402
from engine.export.verify import (PROMPTS, TOLERANCES, compare_logits,  # noqa: E402
                                  llama_logits, mlx_logits, open_llama)
from engine.tiny_models import ALL_KINDS, cached_tiny_model  # noqa: E402
from tests.export.helpers import swapped_blocks_copy  # noqa: E402


def reference(model_dir: Path) -> tuple[list[list[int]], list]:
    """The verification prompts' tokens and MLX's logits on them (the same for every type)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    token_lists = [tok.encode(p, add_special_tokens=True) for p in PROMPTS]
    return token_lists, mlx_logits(model_dir, token_lists)


def measure(src: Path, ref: tuple[list[list[int]], list], quant: str, work: Path) -> dict:
    token_lists, ref_logits = ref
    out = work / f"{src.name}-{quant}.gguf"
    export_gguf(src, out, quant, verify=False)
    llm = open_llama(out)
    try:
        got = [llama_logits(llm, t) for t in token_lists]
    finally:
        llm.close()
    out.unlink()
    return compare_logits(ref_logits, got, TOLERANCES[quant])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], type=Path,
                    help="a Hugging Face/MLX model folder to measure too (repeatable)")
    ap.add_argument("--adapter", action="append", default=[],
                    help="a library adapter, fused into a temporary folder (repeatable)")
    ap.add_argument("--quant", nargs="*", default=list(TOLERANCES), choices=list(TOLERANCES))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="tailor-verify-bench-") as td:
        work = Path(td)
        models = {k: (cached_tiny_model(k), cached_tiny_model(k)) for k in ALL_KINDS}
        for folder in args.model:
            models[folder.name] = (folder, folder)
        if args.adapter:
            from engine.fuse import fuse_adapter

            for name in args.adapter:
                fused = fuse_adapter(name, work / f"fused-{name}")
                models[name] = (fused, fused)
        llama3 = cached_tiny_model("llama3")
        broken = swapped_blocks_copy(llama3, work / "llama3-swapped-blocks")
        refs = {name: reference(ref_dir) for name, (_, ref_dir) in models.items()}

        print(f"{'type':7} {'strict (lowest)':>22} {'with near-ties':>22} {'max rel diff':>13}"
              f" {'all good pass':>13} {'broken: agree / passed':>23}")
        failures = 0
        for quant in args.quant:
            stats = {name: measure(src, refs[name], quant, work)
                     for name, (src, _) in models.items()}
            bad = measure(broken, refs["llama3"], quant, work)
            low = min(stats, key=lambda n: stats[n]["agreement"])
            low_t = min(stats, key=lambda n: stats[n]["agreement_with_ties"])
            high = max(stats, key=lambda n: stats[n]["max_rel_diff"])
            all_pass = all(s["passed"] for s in stats.values())
            failures += (not all_pass) + bad["passed"]
            print(f"{quant:7} {stats[low]['agreement']:>12.1%} ({low[:7]:>7})"
                  f" {stats[low_t]['agreement_with_ties']:>12.1%} ({low_t[:7]:>7})"
                  f" {stats[high]['max_rel_diff']:>13.1e} {str(all_pass):>13}"
                  f" {bad['agreement_with_ties']:>15.1%} / {str(bad['passed']):5}", flush=True)
            for name, s in stats.items():
                if not s["passed"]:
                    print(f"        FAILS on {name}: {s}")
    print("tolerances OK: every good model passes, the broken file fails every type"
          if not failures else f"{failures} problem(s): see above")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
