"""llama.cpp's activation rounding, for the MLX reference of the quantized-export check.

ggml's CPU matmul of a quantized weight first converts the activations to the weight type's
``vec_dot_type`` and multiplies integers: Q8_K (256-value blocks, float32 scale) for the
K-quants and IQ4_XS, Q8_0/Q8_1 (32-value blocks, float16 scale; the same values) for Q4_0 ..
Q8_0, IQ4_NL and MXFP4; an F16 weight takes float16 activations, BF16 bfloat16, F32 none.
That is 8-bit rounding of every input of every quantized layer, which a random-weight
8-layer fixture carries to its logits as 1-2% of their range. With MLX running on the
file's decoded weights and rounding its layer inputs the same way, what is left between the
two is float arithmetic, so the check can bound the logits tightly and see small errors.

Which layer gets which rounding: the planned tensor of the same Hugging Face name, else the
planned tensors of the layer's (rows, cols) shape, else of its input width (fused or renamed
layers; the quantized type where a float tensor shares the shape); none where these disagree
or nothing matches (counted in the check record).
"""
from __future__ import annotations

from contextlib import contextmanager

K_FAMILY = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS")
Q8_0_FAMILY = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "MXFP4")


def vec_dot_kind(type_name: str) -> str | None:
    """The activation rounding ggml's CPU matmul applies for a weight of ``type_name``."""
    if type_name in K_FAMILY:
        return "q8_k"
    if type_name in Q8_0_FAMILY:
        return "q8_0"
    return {"F16": "f16", "BF16": "bf16"}.get(type_name)


def round_activations(x, kind: str):
    """``x`` [..., n] as ggml's quantize_row_q8_K / q8_0 (or the float16/bfloat16 cast)
    leaves it, in x's dtype."""
    import mlx.core as mx

    if kind == "f16":
        return x.astype(mx.float16).astype(x.dtype)
    if kind == "bf16":
        return x.astype(mx.bfloat16).astype(x.dtype)
    block = 256 if kind == "q8_k" else 32
    n = x.shape[-1]
    if n % block:
        return x
    xb = x.astype(mx.float32).reshape(-1, n // block, block)
    if kind == "q8_k":  # iscale = -127 / (the signed value of largest magnitude), d = 1/iscale
        top = mx.take_along_axis(xb, mx.argmax(mx.abs(xb), -1, keepdims=True), -1)
        iscale = mx.where(top != 0, -127.0 / mx.where(top != 0, top, 1.0), 0.0)
        q = mx.minimum(mx.round(xb * iscale), 127.0)
        d = mx.where(iscale != 0, 1.0 / mx.where(iscale != 0, iscale, 1.0), 0.0)
    else:  # d = amax / 127 stored as float16; the values rounded with the float32 1/d
        amax = mx.max(mx.abs(xb), -1, keepdims=True)
        d32 = amax / 127.0
        q = mx.round(xb * mx.where(d32 != 0, 1.0 / mx.where(d32 != 0, d32, 1.0), 0.0))
        d = d32.astype(mx.float16).astype(mx.float32)
    return (q * d).reshape(x.shape).astype(x.dtype)


def _kinds_by_key(planned) -> tuple[dict, dict, dict]:
    """Planned tensors' rounding by Hugging Face layer name, by (rows, cols), by cols."""
    by_name: dict[str, str | None] = {}
    by_shape: dict[tuple, set] = {}
    by_cols: dict[int, set] = {}
    for p in planned:
        if p.ggml_type is None or len(p.shape) < 2:
            continue
        kind = vec_dot_kind(p.ggml_type.name)
        if p.hf_name:
            by_name[p.hf_name.removesuffix(".weight")] = kind
        by_shape.setdefault(tuple(p.shape[-2:]), set()).add(kind)
        by_cols.setdefault(int(p.shape[-1]), set()).add(kind)
    return by_name, by_shape, by_cols


def layer_kinds(model, planned) -> tuple[dict, int]:
    """-> ({module path: rounding kind} for every matmul layer of ``model`` whose file
    tensor rounds its input, the number of layers whose rounding could not be told)."""
    import mlx.nn as nn

    by_name, by_shape, by_cols = _kinds_by_key(planned)
    tied = next((p for p in planned if p.name == "token_embd.weight"), None)
    has_output = any(p.name == "output.weight" for p in planned)
    kinds, unknown = {}, 0
    for path, module in model.named_modules():
        w = getattr(module, "weight", None)
        matmul = isinstance(module, nn.Linear) or type(module).__name__ == "SwitchLinear"
        if w is None or not (matmul or isinstance(module, nn.Embedding)) or \
                isinstance(module, nn.Embedding) and (has_output or tied is None):
            continue
        if isinstance(module, nn.Embedding):  # tied output: llama.cpp multiplies token_embd
            kinds[path] = vec_dot_kind(tied.ggml_type.name)
            continue
        found = {by_name[path]} if path in by_name else \
            by_shape.get(tuple(w.shape[-2:])) or by_cols.get(int(w.shape[-1])) or set()
        if len(found) > 1 and len(found - {None}) == 1:
            found = found - {None}  # a float tensor of that shape (not found by name: no router)
        if len(found) == 1:
            kinds[path] = next(iter(found))
        else:
            unknown += 1
    return {k: v for k, v in kinds.items() if v is not None}, unknown


@contextmanager
def llama_activation_rounding(model, planned):
    """Within the block each matmul layer of ``model`` rounds its input as llama.cpp's CPU
    matmul does for the file's tensor (the instance's class swapped, as for the routers;
    an embedding's ``as_linear``, the tied output, too). Yields the count of layers whose
    rounding could not be told."""
    import mlx.nn as nn

    kinds, unknown = layer_kinds(model, planned)
    swapped = []
    modules = dict(model.named_modules())
    for path, kind in kinds.items():
        module = modules[path]
        base = type(module)
        if isinstance(module, nn.Embedding):
            attrs = {"as_linear": lambda self, x, _b=base, _k=kind: _b.as_linear(
                self, round_activations(x, _k))}
        else:
            attrs = {"__call__": lambda self, x, *a, _b=base, _k=kind, **kw: _b.__call__(
                self, round_activations(x, _k), *a, **kw)}
        module.__class__ = type("Rounded" + base.__name__, (base,), attrs)
        swapped.append((module, base))
    try:
        yield unknown
    finally:
        for module, base in swapped:
            module.__class__ = base
