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

The quantized check (every quantized type): --rounded (dense fixtures: llama3 and gemma 256
wide 8 layers, qwen2 64 wide) and --moe print per file the agreement against plain MLX, the
check's agreement (strict / with near-ties), the worst prompt's median logit difference
against its bound (ratio: pass below 1) and the verdict, for the correct file and broken ones
(tests/export/broken_gguf.py: two ffn_down swapped, attn_q rows reversed, rope_freqs flat,
a norm halved; MoE: experts swapped in the source). --imatrix exports with a seeded matrix.
--memory: peak memory and disk of the check's MLX reference (in memory vs a copy on disk).

    .venv/bin/python bench/verify_tolerances.py --rounded --quant q2_k q4_k_m q8_0
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
from tests.export.broken_gguf import seeded_imatrix  # noqa: E402
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
WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8}
# the quantized check's dense fixtures: 256 wide so the K-quants apply, and a 64-wide one
# (every matrix takes the 32-value fallbacks)
DENSE = {"llama3-256x8": ("llama3", WIDE), "gemma-256x8": ("gemma", WIDE), "qwen2": ("qwen2", {})}


def check_files(src: Path, files: dict[str, Path], quant: str, imatrix=None) -> dict:
    """The quantized check (verify.py) of each GGUF in ``files`` against ``src``'s rounded
    weights: label -> check record (with the agreement against plain MLX added)."""
    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.export.verify import _reference, check_rounded_logits, long_prompt
    from engine.export.write import plan_tensors
    from engine.models.load import read_config
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    token_lists = [tok.encode(p, add_special_tokens=True) for p in PROMPTS] + [long_prompt(tok)]
    a = arch_info(read_config(src))
    planned = plan_tensors(a, list_tensors(src), quant, imatrix=imatrix)
    plain = mlx_logits(src, token_lists)
    ref, rounded = _reference(src, token_lists, planned, a)
    margins = rounded.pop("margins")
    out = {}
    for label, path in files.items():
        llm = open_llama(path)
        try:
            got = [llama_logits(llm, t) for t in token_lists]
        finally:
            llm.close()
        checks: list = []
        check_rounded_logits(checks, ref, got, quant, rounded, margins)
        out[label] = {**checks[0], "plain": compare_logits(plain, got, TOLERANCES[quant]),
                      "rounded_reference": rounded}
    return out


def broken_files(good: Path, work: Path) -> dict[str, Path]:
    """The correct file and each broken kind that applies to it (tests/export/broken_gguf)."""
    from tests.export.broken_gguf import BROKEN_KINDS

    files = {"correct": good}
    for kind, make in BROKEN_KINDS.items():
        dst = work / f"{good.stem}-{kind.replace(' ', '-')}.gguf"
        try:
            make(good, dst)
        except (KeyError, ValueError):  # e.g. no rope table, no two like ffn_down tensors
            continue
        files[kind] = dst
    return files


def print_rows(name: str, quant: str, results: dict) -> int:
    """One line per file: agreement (plain MLX / the check's, with near-ties), the median
    logit difference against its bound, the verdict. -> problems (a correct file failing
    or a broken one passing)."""
    problems = 0
    for label, r in results.items():
        good = label == "correct"
        problems += r["passed"] != good
        print(f"{name:22} {quant:7} {label:12} {r['plain']['agreement_with_ties']:>7.1%} "
              f"{r['agreement']:>7.1%} {r['agreement_with_ties']:>7.1%} "
              f"{r['median_rel_diff']:>9.1e} {min(r['logit_bounds']):>9.1e} "
              f"{r['logit_ratio']:>6.2f} "
              f"{'pass' if r['passed'] else 'FAIL':>5}{'' if r['passed'] == good else '  <-'}",
              flush=True)
    return problems


HEADER = (f"{'fixture':22} {'type':7} {'file':12} {'plain':>7} {'strict':>7} {'+ties':>7} "
          f"{'median':>9} {'bound':>9} {'ratio':>6} {'check':>5}")


def measure_dense(names: list[str], quants: list[str], work: Path, imatrix: bool) -> int:
    """The dense table: each fixture at each type, correct and broken files."""
    problems = 0
    print(HEADER)
    for name in names:
        kind, overrides = DENSE[name]
        src = cached_tiny_model(kind, **overrides)
        for quant in quants:
            imx = seeded_imatrix(src, quant) if imatrix else None
            good = work / f"{name}-{quant}.gguf"
            export_gguf(src, good, quant, verify=False, imatrix=imx)
            problems += print_rows(name + (" +imatrix" if imx else ""), quant,
                                   check_files(src, broken_files(good, work), quant, imx))
    return problems


def measure_moe(kinds: list[str], quants: list[str], work: Path, imatrix: bool) -> int:
    """The --moe table: per kind and type, the trained, fused fixture's file, the file of a
    copy whose layers 0 and 1 trade their expert down projections, and the GGUF edits."""
    from engine.fuse import fuse_adapter
    from tests.families.chain import trained

    problems = 0
    print(HEADER)
    for kind in kinds:
        gentle = kind in ("qwen3_moe", "mixtral", "granitemoe", "gpt_oss")
        info = trained(cached_tiny_model(kind), work, kind,
                       **({"learning_rate": 3e-3} if gentle else {}))
        src = fuse_adapter(info.name, work / f"fused-{kind}")
        broken = swapped_experts_copy(src, work / f"broken-{kind}")
        for quant in quants:
            imx = seeded_imatrix(src, quant) if imatrix else None
            good, swapped = work / f"{kind}-{quant}.gguf", work / f"{kind}-{quant}-experts.gguf"
            export_gguf(src, good, quant, verify=False, imatrix=imx)
            export_gguf(broken, swapped, quant, verify=False, imatrix=imx)
            files = {**broken_files(good, work), "experts": swapped}
            problems += print_rows(kind + (" +imatrix" if imx else ""), quant,
                                   check_files(src, files, quant, imx))
    return problems


MEMORY_STEP = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from engine.export.architectures import arch_info
from engine.export.safetensors_stream import list_tensors
from engine.export.verify import PROMPTS, _reference, mlx_logits, rounded_folder
from engine.export.write import plan_tensors
from engine.models.load import read_config
from transformers import AutoTokenizer
src, how = Path({src!r}), {how!r}
tok = AutoTokenizer.from_pretrained(str(src))
tl = [tok.encode(p, add_special_tokens=True) for p in PROMPTS]
a = arch_info(read_config(src))
planned = plan_tensors(a, list_tensors(src), "q4_k_m")
def status(key):  # kB in /proc/self/status
    return next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith(key))
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
base = status("VmRSS")
t0 = time.process_time()
if how == "plain":
    mlx_logits(src, tl)
elif how == "in memory":
    _reference(src, tl, planned, a)
else:
    dst = Path({work!r}) / "rounded"
    rounded_folder(src, planned, dst)
    mlx_logits(dst, tl)
    print("DISK", sum(f.stat().st_size for f in dst.iterdir()))
print("PEAK", status("VmHWM") * 1024, base * 1024, time.process_time() - t0)
"""


def measure_memory(work: Path) -> None:
    """Peak memory (VmHWM over the resident set after imports, one process per way) of MLX's reference for a Q4_K_M file:
    the plain model, rounded in memory (the check), and the s3 way (a rounded float32 copy
    on disk, loaded), on a 1024-wide 8-layer llama3 in float32 and a float16 copy of it."""
    import subprocess

    from tests.export.helpers import f16_copy

    f32 = cached_tiny_model("llama3", hidden_size=1024, intermediate_size=2816,
                            num_hidden_layers=8)
    f16 = f16_copy(f32, work / "llama3-1024-f16")
    root = str(Path(__file__).resolve().parent.parent)
    print(f"{'model':14} {'reference':12} {'weights MB':>10} {'peak MB':>8} {'x weights':>9} "
          f"{'disk MB':>8} {'CPU s':>6}")
    for label, src in (("f32 1024x8", f32), ("f16 1024x8", f16)):
        size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
        for how in ("plain", "in memory", "on disk"):
            run = subprocess.run([sys.executable, "-c", MEMORY_STEP.format(
                root=root, src=str(src), how=how, work=str(work))], capture_output=True,
                text=True, check=True).stdout.split("\n")
            peak, base, cpu = next(line.split()[1:] for line in run if line.startswith("PEAK"))
            disk = next((int(line.split()[1]) for line in run if line.startswith("DISK")), 0)
            grown = int(peak) - int(base)
            print(f"{label:14} {how:12} {size / 1e6:>10.0f} {grown / 1e6:>8.0f} "
                  f"{grown / size:>9.2f} {disk / 1e6:>8.0f} {float(cpu):>6.1f}", flush=True)
            if how == "on disk":
                import shutil

                shutil.rmtree(work / "rounded")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], type=Path,
                    help="a Hugging Face/MLX model folder to measure too (repeatable)")
    ap.add_argument("--adapter", action="append", default=[],
                    help="a library adapter, fused into a temporary folder (repeatable)")
    ap.add_argument("--quant", nargs="*", default=list(TOLERANCES), choices=list(TOLERANCES))
    ap.add_argument("--moe", nargs="*", default=None, metavar="KIND",
                    help=f"the quantized check on the trained MoE fixtures ({MOE_KINDS})")
    ap.add_argument("--rounded", nargs="*", default=None, metavar="FIXTURE",
                    help=f"the quantized check on the dense fixtures ({list(DENSE)})")
    ap.add_argument("--memory", action="store_true",
                    help="peak memory and disk of the quantized check's MLX reference")
    ap.add_argument("--imatrix", action="store_true",
                    help="with --moe/--rounded: export with a seeded importance matrix")
    args = ap.parse_args()
    if args.memory:
        with tempfile.TemporaryDirectory(prefix="tailor-verify-memory-") as td:
            measure_memory(Path(td))
        return 0
    if args.moe is not None or args.rounded is not None:
        import os

        with tempfile.TemporaryDirectory(prefix="tailor-verify-rounded-") as td:
            os.environ["TAILOR_HOME"] = str(Path(td) / "home")
            quants = [q for q in args.quant if q not in ("f32", "f16", "bf16")]
            failures = measure_moe(args.moe or MOE_KINDS, quants, Path(td), args.imatrix) \
                if args.moe is not None else \
                measure_dense(args.rounded or list(DENSE), quants, Path(td), args.imatrix)
        print("OK: every correct file passes, every broken one fails" if not failures
              else f"{failures} problem(s): see above (<-)")
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
