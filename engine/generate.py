"""`tailor generate`: try a base model or a library adapter with a prompt, streamed.

The prompt goes through the model's chat template (as the adapter was trained), tokens are
printed as they come and reported as ``progress`` events with stage ``generate``.
"""
from __future__ import annotations

import argparse
import sys

from .events import CancelToken, Finished, Progress, Reporter, TailorError, null_reporter
from .results import GenerateResult


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model folder or Hugging Face repo id")
    src.add_argument("--adapter", help="an adapter in the library (its base model is used)")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", default=None, help="an optional system message")
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--raw", action="store_true", help="send the prompt without the chat template")


def generate_text(model_or_folder: str | None, adapter: str | None, prompt: str, *,
                  system: str | None = None, max_tokens: int = 256, temperature: float = 0.0,
                  raw: bool = False, on_text=None, report: Reporter = null_reporter,
                  cancel: CancelToken | None = None, job: str = "generate") -> str:
    """The generated text; ``on_text(piece)`` is called for every streamed piece."""
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.tuner.utils import load_adapters

    from . import library
    from .data.render import Renderer
    from .models import load_model, resolve_model

    if max_tokens < 1 or max_tokens > 1_000_000:
        raise TailorError(f"--max-tokens must be between 1 and 1000000, not {max_tokens}")
    adapter_dir = None
    if adapter:
        info = library.get_adapter(adapter)
        if not info.weights.exists():
            raise TailorError(f"adapter {adapter!r} has no weights yet (status {info.status})")
        adapter_dir = info.path
        model_or_folder = info.base_model or (info.manifest.get("base_model") or {}).get("given")
    folder = resolve_model(str(model_or_folder), report=report, cancel=cancel, job=job)
    from .models.folder_files import model_files

    model_files(folder).report_skipped(report, job)  # linked out of the folder: not read
    quant = ((library.get_adapter(adapter).manifest.get("settings") or {}).get("quantize_base")
             if adapter else None)
    from .models.tokenizer import refuse_custom_code

    refuse_custom_code(folder)  # said before the weights load
    model, tokenizer, _ = load_model(folder, quant)
    if adapter_dir is not None:
        from .models.safetensors_check import check_adapter_file

        check_adapter_file(adapter_dir / "adapters.safetensors")  # named, not MLX's RuntimeError
        load_adapters(model, str(adapter_dir))
    model.eval()
    # Tailor's bounded renderer, as in training (not transformers' apply_chat_template, whose
    # sandbox has no time or size limit): a template bomb or violation is a named error.
    renderer = None if raw else Renderer(tokenizer, max_tokens=max_tokens)
    if renderer is None or not renderer.template_source:
        text = prompt
    else:
        msgs = ([{"role": "system", "content": system}] if system else []) + \
               [{"role": "user", "content": prompt}]
        text = renderer.render_prompt(msgs)
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = []
    n = 0
    for r in mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=max_tokens,
                                    sampler=make_sampler(temp=temperature)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        pieces.append(r.text)
        n += 1
        if on_text:
            on_text(r.text)
        report(Progress(job=job, stage="generate", done=n, total=max_tokens, message=r.text))
    return "".join(pieces)


def run(args: argparse.Namespace, job) -> int:
    out = sys.stdout if args.events != "-" else sys.stderr

    def show(piece: str) -> None:
        out.write(piece)
        out.flush()

    text = generate_text(args.model, args.adapter, args.prompt, system=args.system,
                         max_tokens=args.max_tokens, temperature=args.temperature, raw=args.raw,
                         on_text=show, report=job.report if args.events else (lambda e: None),
                         cancel=job.cancel, job=job.name)
    out.write("\n")
    job.report(Finished(job=job.name, result=GenerateResult(text=text)))
    return 0
