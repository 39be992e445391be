"""The model card (README.md) a pushed adapter gets: YAML front matter the Hub reads
(base_model, library_name, license, tags), then how it was trained (every setting, the
dataset's name and sha256, never its content), the loss curve, the latest evaluation's scores
(no held-out examples: they are the user's data) and how to run it in mlx-lm, llama.cpp,
Ollama and LM Studio.

The front matter is written by hand with JSON-quoted strings (valid YAML), so the card needs
no YAML library; tests read it back with huggingface_hub's own ModelCard.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CardInputs:
    """What the card says, gathered by the push (engine/hub/push.py)."""

    name: str
    repo_id: str
    manifest: dict
    base_license: str | None = None
    files: list[tuple[str, int, str]] = field(default_factory=list)  # (path in repo, bytes, what)
    ggufs: list[str] = field(default_factory=list)   # paths in the repo
    peft_folder: str | None = None  # "" (the repo's root) or a subfolder; None: not pushed
    mlx_folder: str = ""
    evaluation: object | None = None  # an EvalReport
    loss_curve: str | None = None     # path in the repo


def yaml_list(values) -> str:
    return "".join(f"\n- {json.dumps(v)}" for v in values)


def front_matter(c: CardInputs) -> str:
    base = (c.manifest.get("base_model") or {}).get("repo_id")
    method = (c.manifest.get("settings") or {}).get("method") or \
        (c.manifest.get("adapter_config") or {}).get("fine_tune_type") or "lora"
    tags = ["tailor", method, "mlx", "text-generation"] + (["gguf"] if c.ggufs else []) + \
        (["peft"] if c.peft_folder is not None else [])
    lines = ["---"]
    if base:
        lines.append(f"base_model: {json.dumps(base)}")
    lines.append(f"library_name: {json.dumps('peft' if c.peft_folder == '' else 'mlx')}")
    if c.base_license:
        lines.append(f"license: {json.dumps(c.base_license)}")
    lines.append('pipeline_tag: "text-generation"')
    lines.append("tags:" + yaml_list(tags))
    lines.append("---")
    return "\n".join(lines) + "\n"


def _value(v) -> str:
    """A setting as the card shows it: a local path by its file name only (a chat template
    file, a starting adapter: the full path names the user's folders)."""
    if isinstance(v, str) and (v.startswith(("/", "~")) or re.match(r"^[A-Za-z]:\\", v)):
        v = f"{Path(v).name} (a local file)"
    if v == "":
        return "(none)"
    text = json.dumps(v) if not isinstance(v, str) else v.replace("\n", " ")
    return "`" + text[:200].replace("`", "'").replace("|", "\\|") + "`"


METHOD_NAMES = {"lora": "LoRA", "dora": "DoRA", "full": "full fine-tune"}


def training_section(c: CardInputs) -> str:
    m = c.manifest
    base = m.get("base_model") or {}
    data = m.get("dataset") or {}
    history = m.get("loss_history") or {}
    out = ["## How it was trained", "",
           f"Trained with Tailor on MLX as `{m.get('name', c.name)}`, "
           f"status {m.get('status', 'unknown')}.", "",
           f"- Base model: `{base.get('repo_id') or Path(str(base.get('path', ''))).name}`"
           + (f" (revision `{base['revision']}`)" if base.get("revision") else "")
           + (f", weights sha256 `{base['sha256']}`" if base.get("sha256") else ""),
           f"- Dataset: `{Path(str(data.get('path', ''))).name or 'unknown'}`, sha256 "
           f"`{data.get('sha256') or 'unknown'}`"
           + (f", format {data['schema']}" if data.get("schema") else "")
           + " (the data itself is not in this repository)"]
    counts = data.get("counts") or {}
    if counts:
        out.append("- Examples: " + ", ".join(f"{k} {v}" for k, v in counts.items()
                                              if isinstance(v, (int, float))))
    if m.get("best_val_loss") is not None:
        out.append(f"- Best validation loss: {m['best_val_loss']:.4f}")
    train = history.get("train") or []
    if train:
        out.append(f"- Steps: {int(train[-1][0])}, last train loss {float(train[-1][1]):.4f}")
    versions = m.get("versions") or {}
    if versions:
        out.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    out += ["", "| setting | value |", "| --- | --- |"]
    for key, value in {**(m.get("settings") or {}), **{
            f"data.{k}": v for k, v in (m.get("data_settings") or {}).items()}}.items():
        out.append(f"| {key} | {_value(value)} |")
    if c.loss_curve:
        out += ["", f"![Training and validation loss]({c.loss_curve})", "",
                "Training loss (blue) and validation loss (orange) by step."]
    return "\n".join(out) + "\n"


def evaluation_section(report) -> str:
    if report is None:
        return ""

    def num(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    data = report.data or {}
    out = ["## Evaluation", "", report.verdict or "", "",
           f"On {len(report.examples)} held-out examples of `{Path(str(data.get('path', ''))).name}`"
           f" (sha256 `{data.get('sha256', 'unknown')}`, seed {report.settings.get('seed', 0)}); "
           f"the examples themselves are not published.", "",
           "| | base | with the adapter |", "| --- | --- | --- |"]
    for label, attr, fmt in (("loss", "loss", ".3f"), ("perplexity", "perplexity", ".4g"),
                             ("exact match", "exact_match", ".0%"), ("token F1", "f1", ".2f"),
                             ("ROUGE-L", "rouge_l", ".2f")):
        out.append(f"| {label} | {num(getattr(report.base, attr), fmt)} | "
                   f"{num(getattr(report.tuned, attr), fmt)} |")
    out.append(f"\nBetter on {report.better}, worse on {report.worse} examples.")
    return "\n".join(out) + "\n"


def usage_section(c: CardInputs) -> str:
    base = (c.manifest.get("base_model") or {}).get("repo_id") or "BASE_MODEL"
    mlx_dir = f"adapter/{c.mlx_folder}" if c.mlx_folder else "adapter"
    out = ["## How to run it", "", "### mlx-lm (Apple silicon)", "", "```sh",
           f"huggingface-cli download {c.repo_id} --local-dir adapter",
           f"mlx_lm.generate --model {base} --adapter-path {mlx_dir} --prompt \"Hello\"", "```"]
    if c.peft_folder is not None:
        sub = f", subfolder={json.dumps(c.peft_folder)}" if c.peft_folder else ""
        out += ["", "### PEFT (transformers)", "", "```python",
                "from peft import PeftModel", "from transformers import AutoModelForCausalLM",
                f"model = AutoModelForCausalLM.from_pretrained({json.dumps(base)})",
                f"model = PeftModel.from_pretrained(model, {json.dumps(c.repo_id)}{sub})", "```"]
    if c.ggufs:
        first = c.ggufs[0]
        out += ["", "### llama.cpp", "", "```sh",
                f"llama-cli --hf-repo {c.repo_id} --hf-file {first} -p \"Hello\"", "```",
                "", "### Ollama", "", "```sh", f"ollama run hf.co/{c.repo_id}:"
                f"{Path(first).stem.rsplit('-', 1)[-1].upper()}", "```",
                "", "### LM Studio", "",
                f"Search for `{c.repo_id}` in LM Studio's Discover tab, or "
                f"`lms get {c.repo_id}`; a downloaded file can be added with "
                f"`lms import {first}` (or `tailor lmstudio --gguf {first}`)."]
    else:
        out += ["", "### llama.cpp, Ollama, LM Studio", "",
                "These run GGUF files: push again with `--gguf Q4_K_M` (Tailor writes and "
                "verifies the file), or export one locally with `tailor export`."]
    return "\n".join(out) + "\n"


def files_section(c: CardInputs) -> str:
    from ..sizes import format_bytes

    out = ["## Files", "", "| file | size | what |", "| --- | --- | --- |"]
    for path, size, what in c.files:
        out.append(f"| `{path}` | {format_bytes(size)} | {what} |")
    return "\n".join(out) + "\n"


def model_card(c: CardInputs) -> str:
    base = (c.manifest.get("base_model") or {}).get("repo_id") or "its base model"
    method = (c.manifest.get("settings") or {}).get("method") or "lora"
    method = METHOD_NAMES.get(method, method)
    intro = (f"# {c.name}\n\nA {method} adapter for `{base}`, trained with Tailor on MLX"
             + (" and exported to GGUF (verified in llama.cpp)" if c.ggufs else "") + ".\n")
    parts = [front_matter(c), intro, files_section(c), training_section(c),
             evaluation_section(c.evaluation), usage_section(c)]
    return "\n".join(p for p in parts if p)
