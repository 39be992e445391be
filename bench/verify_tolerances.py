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

With --moe: the mixture-of-experts fixtures, each trained a few LoRA steps and fused, checked
as verification checks them (MLX on the file's rounded weights, router near-ties counted),
beside the same model with layers 0 and 1 trading their expert down projections.

    .venv/bin/python bench/verify_tolerances.py --moe --quant q8_0 q4_k_m
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
from tests.export.moe_helpers import swapped_experts_copy  # noqa: E402


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


MOE_KINDS = ["qwen3_5_moe", "qwen3_moe", "gpt_oss", "mixtral", "granitemoe", "qwen3_next",
             "granitemoehybrid_moe"]


def measure_moe(kinds: list[str], quants: list[str], work: Path) -> int:
    """The --moe table: per kind and type, the correct file's and the broken file's check."""
    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.export.verify import _reference, rounded_tolerance
    from engine.export.write import plan_tensors
    from engine.fuse import fuse_adapter
    from engine.models.load import read_config
    from tests.families.chain import trained
    from transformers import AutoTokenizer

    failures = 0
    # agreement with near-ties: against MLX on the source (the type's bar), on the file's
    # rounded weights, and with router near-ties counted (the check; bar rounded_tolerance)
    print(f"{'fixture':12} {'type':7} {'plain MLX':>10} {'rounded':>8} {'+router':>8} "
          f"{'passes':>6} {'broken':>7} {'fails':>5}")
    for kind in kinds:
        gentle = kind in ("qwen3_moe", "mixtral", "granitemoe", "gpt_oss")
        info = trained(cached_tiny_model(kind), work, kind,
                       **({"learning_rate": 3e-3} if gentle else {}))
        src = fuse_adapter(info.name, work / f"fused-{kind}")
        broken = swapped_experts_copy(src, work / f"broken-{kind}")
        tok = AutoTokenizer.from_pretrained(str(src))
        token_lists = [tok.encode(p, add_special_tokens=True) for p in PROMPTS]
        plain = mlx_logits(src, token_lists)
        a = arch_info(read_config(src))
        for quant in quants:
            td = Path(tempfile.mkdtemp(dir=work))
            ref, rounded = _reference(src, token_lists, plan_tensors(a, list_tensors(src), quant),
                                      a, quant, td)
            margins = rounded.pop("margins") if rounded else None
            row = []
            for m in (src, broken):
                out = work / f"{kind}-{quant}.gguf"
                export_gguf(m, out, quant, verify=False)
                llm = open_llama(out)
                try:
                    got = [llama_logits(llm, t) for t in token_lists]
                finally:
                    llm.close()
                out.unlink()
                tol, bar = TOLERANCES[quant], rounded_tolerance(quant)
                row.append((compare_logits(plain, got, tol), compare_logits(ref, got, bar),
                            compare_logits(ref, got, bar, margins)))
            (p0, r0, g0), (_, _, b0) = row
            failures += (not g0["passed"]) + b0["passed"]
            print(f"{kind:12} {quant:7} {p0['agreement_with_ties']:>10.1%} "
                  f"{r0['agreement_with_ties']:>8.1%} {g0['agreement_with_ties']:>8.1%} "
                  f"{str(g0['passed']):>6} {b0['agreement_with_ties']:>7.1%} "
                  f"{str(not b0['passed']):>5}  median rel diff {g0['median_rel_diff']:.1e}"
                  f" / broken {b0['median_rel_diff']:.1e}", flush=True)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], type=Path,
                    help="a Hugging Face/MLX model folder to measure too (repeatable)")
    ap.add_argument("--adapter", action="append", default=[],
                    help="a library adapter, fused into a temporary folder (repeatable)")
    ap.add_argument("--quant", nargs="*", default=list(TOLERANCES), choices=list(TOLERANCES))
    ap.add_argument("--moe", nargs="*", default=None, metavar="KIND",
                    help=f"measure the trained MoE fixtures instead (default: {MOE_KINDS})")
    args = ap.parse_args()
    if args.moe is not None:
        import os

        with tempfile.TemporaryDirectory(prefix="tailor-verify-moe-") as td:
            os.environ["TAILOR_HOME"] = str(Path(td) / "home")
            quants = [q for q in args.quant if q not in ("f32", "f16", "bf16")]
            failures = measure_moe(args.moe or MOE_KINDS, quants, Path(td))
        print("MoE OK: every correct file passes, every broken one fails" if not failures
              else f"{failures} problem(s): see above")
        return 1 if failures else 0

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
