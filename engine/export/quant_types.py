"""The GGUF file types Tailor writes, one table read by `tailor export --help`, the export's
checks and (stdlib only) the app.

Bits per weight are of whole files, from llama.cpp's own quantize table (tools/quantize:
file sizes of Llama-3-8B, 8.03e9 weights; Q4_0..Q5_1 of LLaMA-v1-7B, 6.74e9; IQ4_NL/XS
as llama.cpp states them): the output tensor and some attention/FFN tensors take a
larger type, so a file is above its main type's block size. Small models with a large
vocabulary are further above (their Q6_K/Q8_0 embedding is a bigger share).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantType:
    name: str               # the --quant value
    ftype: int              # llama.cpp's llama_ftype (the GGUF's general.file_type)
    bits_per_weight: float  # typical, whole file (see above)
    use: str                # one line: what it is for
    # 2- and 3-bit types lose much without an importance matrix (llama.cpp's own advice)
    wants_imatrix: bool = False

    @property
    def description(self) -> str:
        return f"{self.name}: ~{self.bits_per_weight:g} bits/weight, {self.use}"


QUANT_TYPES: tuple[QuantType, ...] = (
    QuantType("f32", 0, 32.0, "full precision: a reference, 2x F16's size"),
    QuantType("f16", 1, 16.0, "half precision: lossless for most models"),
    QuantType("bf16", 32, 16.0, "bfloat16: lossless for models trained in bf16"),
    QuantType("q8_0", 7, 8.5, "practically lossless; half of F16"),
    QuantType("q6_k", 18, 6.57, "near-lossless"),
    QuantType("q5_k_m", 17, 5.7, "very close to the original"),
    QuantType("q5_k_s", 16, 5.57, "a little smaller than Q5_K_M"),
    QuantType("q5_1", 9, 5.99, "legacy 5-bit with a min (Q5_K_M is better at this size)"),
    QuantType("q5_0", 8, 5.52, "legacy 5-bit (Q5_K_S is better at this size)"),
    QuantType("q4_k_m", 15, 4.9, "the usual choice: small, keeps quality"),
    QuantType("q4_k_s", 14, 4.67, "a little smaller than Q4_K_M"),
    QuantType("q4_1", 3, 4.97, "legacy 4-bit with a min"),
    QuantType("q4_0", 2, 4.54, "legacy 4-bit; fast on some CPUs"),
    QuantType("iq4_nl", 25, 4.5, "4-bit non-linear grid, 32-value blocks"),
    QuantType("iq4_xs", 30, 4.25, "4-bit non-linear grid, smaller than Q4_K_S at similar "
                                  "quality"),
    QuantType("q3_k_l", 13, 4.31, "3-bit, larger attention/FFN-down types; for tight memory",
              wants_imatrix=True),
    QuantType("q3_k_m", 12, 4.0, "3-bit; noticeable loss, for tight memory", True),
    QuantType("q3_k_s", 11, 3.65, "3-bit throughout; clear loss", True),
    QuantType("q2_k", 10, 3.17, "2-bit; large loss, only when nothing else fits", True),
    # gpt-oss's own format (llama.cpp MOSTLY_MXFP4_MOE): 4.6 is gpt-oss-20b's file (about
    # 12.1 GB for 20.9e9 weights, as published); a model without experts is all Q8_0
    QuantType("mxfp4_moe", 38, 4.6, "mixture-of-experts: experts in MXFP4 (gpt-oss's own "
                                    "format), the rest Q8_0"),
)
QUANT_BY_NAME = {q.name: q for q in QUANT_TYPES}


def imatrix_warning(name: str) -> str | None:
    """The warning for a type that wants an importance matrix, or None."""
    q = QUANT_BY_NAME.get(name)
    if q is None or not q.wants_imatrix:
        return None
    return (f"{name.upper()} without an importance matrix: at 2-3 bits per weight the "
            "quantization error is spread evenly over all weights, including those that "
            "matter most to the model's output, so quality drops well below what the "
            "same type reaches with a matrix computed on representative text")


def help_table(sizes: dict[str, str] | None = None, model: str = "") -> str:
    """One line per type (name, bits per weight, use), for the CLI help's epilog; with
    ``sizes`` (type -> text), each type's expected size for ``model`` after its bits."""
    lines = ["file types (--quant), with typical bits per weight of the whole file"
             + (f" and the expected size for {model}:" if sizes else ":")]
    for q in QUANT_TYPES:
        note = " (an importance matrix helps)" if q.wants_imatrix else ""
        size = f"{sizes.get(q.name, '?'):>9}  " if sizes else ""
        lines.append(f"  {q.name:<7} {q.bits_per_weight:>5.2f}  {size}{q.use}{note}")
    return "\n".join(lines)
