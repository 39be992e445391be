"""Run by a Python that has torch (CPU) and peft, not by the test process: loads each PEFT
folder with ``PeftModel.from_pretrained`` on its base (transformers, float32), checks every
tensor of the file landed in the model, and writes the next-token logits.

    python peft_oracle.py CASES.json OUT.npz
CASES.json: [{"name": ..., "base": DIR, "peft": DIR, "ids": [int, ...]}, ...]
"""
from __future__ import annotations

import json
import sys


def main(cases_file: str, out_file: str) -> int:
    import numpy as np
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    results = {}
    for case in json.loads(open(cases_file, encoding="utf-8").read()):
        base = AutoModelForCausalLM.from_pretrained(case["base"], dtype=torch.float32)
        model = PeftModel.from_pretrained(base, case["peft"]).eval()
        state = model.state_dict()
        # every tensor of the file is in the model under PEFT's own name for it
        for key, value in load_file(f"{case['peft']}/adapter_model.safetensors").items():
            loaded = key.replace(".lora_A.weight", ".lora_A.default.weight") \
                .replace(".lora_B.weight", ".lora_B.default.weight") \
                .replace(".lora_magnitude_vector", ".lora_magnitude_vector.default.weight")
            if loaded not in state:
                raise SystemExit(f"{case['name']}: {key} was not loaded (no {loaded})")
            if not torch.equal(state[loaded], value):
                raise SystemExit(f"{case['name']}: {key} differs from the model's {loaded}")
        with torch.no_grad():
            logits = model(torch.tensor([case["ids"]])).logits[0, -1]
            with model.disable_adapter():
                base_logits = model(torch.tensor([case["ids"]])).logits[0, -1]
        results[case["name"]] = logits.numpy().astype(np.float64)
        results[case["name"] + ":base"] = base_logits.numpy().astype(np.float64)
    np.savez(out_file, **results)
    import peft

    print(json.dumps({"torch": torch.__version__, "peft": peft.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
