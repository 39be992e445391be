"""llama.cpp's own objective, per tensor kind: does the importance matrix lower it? (issue 21)

For a folder left by bench/imatrix_quality.py (plain-Q.gguf, imatrix-Q.gguf, the matrix, the
adapter), dequantizes each exported tensor with gguf-py and compares it with the fused float
weights (base + LoRA): the activation-weighted relative error sum dW_ij^2 E[x_j^2] / sum W_ij^2
E[x_j^2] (what the K-quant search minimizes with a matrix) and the plain relative error.
Only tensors whose rows are not permuted on the way to GGUF (ffn_*, attn_v, attn_output).

    .venv/bin/python bench/imatrix_layer_error.py RUN_FOLDER BASE/model.safetensors q2_k q3_k_m
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.export.imatrix_file import load_imatrix  # noqa: E402

MODULES = {"ffn_up": "mlp.up_proj", "ffn_gate": "mlp.gate_proj", "ffn_down": "mlp.down_proj",
           "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj"}


def main() -> None:
    root, base_file, quants = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    adapter = root / "home/adapters/bench"
    scale = json.loads((adapter / "adapter_config.json").read_text())["lora_parameters"]["scale"]
    base, lora = mx.load(base_file), mx.load(str(adapter / "adapters.safetensors"))
    energy = load_imatrix(next(root.glob("*.imatrix.gguf"))).weights()

    def fused(layer: int, module: str) -> np.ndarray:
        k = f"model.layers.{layer}.{module}"
        delta = np.array(lora[k + ".lora_a"], np.float64) @ np.array(lora[k + ".lora_b"], np.float64)
        return np.array(base[k + ".weight"], np.float64) + scale * delta.T

    print("| type | tensor | encoded as | weighted err without | with | ratio | plain err without | with | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for quant in quants:
        readers = {v: {t.name: t for t in gguf.GGUFReader(str(root / f"{v}-{quant}.gguf")).tensors}
                   for v in ("plain", "imatrix")}
        errs: dict[str, dict[str, list]] = {"plain": {}, "imatrix": {}}
        for name in readers["plain"]:
            parts = name.split(".")
            if parts[0] != "blk" or parts[2] not in MODULES:
                continue
            ref, e = fused(int(parts[1]), MODULES[parts[2]]), np.asarray(energy[name], np.float64)
            for v, tensors in readers.items():
                t = tensors[name]
                d = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref.shape) - ref
                errs[v].setdefault(parts[2], []).append(
                    ((d ** 2 * e).sum() / (ref ** 2 * e).sum(), (d ** 2).sum() / (ref ** 2).sum(),
                     t.tensor_type.name))
        for kind in MODULES:
            p, w = np.array([x[:2] for x in errs["plain"][kind]]), np.array([x[:2] for x in errs["imatrix"][kind]])
            (pw, pf), (ww, wf) = p.mean(axis=0), w.mean(axis=0)
            print(f"| {quant.upper()} | {kind} | {errs['plain'][kind][0][2]} | {pw:.4f} | {ww:.4f} | "
                  f"{ww / pw:.3f} | {pf:.4f} | {wf:.4f} | {wf / pf:.3f} |")


if __name__ == "__main__":
    main()
