"""Hand a GGUF (or a LoRA adapter GGUF on top of a base already in Ollama) to Ollama, or write
the ready folder when no server is there.

Order of work, so that nothing is uploaded for a request that will be refused anyway: check the
name, read the GGUF (type, architecture, file type for ``quantize``), derive the Go template and
stops, check the server and name collisions, then hash → HEAD → upload → create → show.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..capabilities import ollama_applies_adapter
from ..events import CancelToken, Log, Reporter, TailorError, null_reporter, stage_progress
from ..export.gguf_check import check_gguf
from ..results import HandoffResult
from .client import (QUANTIZABLE_FILE_TYPES, OllamaClient, OllamaError, OllamaNameTaken,
                     normalize_quant)
from .modelfile import ModelfileSpec, write_modelfile_folder
from .names import find_existing, parse_model_name
from .templates import (OllamaTemplate, convert_chat_template, read_gguf_chat_info,
                        read_hf_chat_info)

JOB = "ollama"


@dataclass
class ModelSettings:
    """What the user chose besides the model: system prompt and sampling defaults."""

    system: str | None = None
    temperature: float | None = None
    num_ctx: int | None = None

    def parameters(self, stops: list[str]) -> dict[str, Any]:
        params: dict[str, Any] = {"stop": list(stops)}
        if self.temperature is not None:
            params["temperature"] = float(self.temperature)
        if self.num_ctx is not None:
            params["num_ctx"] = int(self.num_ctx)
        return params


def derive_template(gguf: Path | None, fallback_model_dir: Path | str | None = None,
                    report: Reporter = null_reporter) -> tuple[OllamaTemplate, dict]:
    """The Go template and stops for ``gguf`` (its own chat template), else from
    ``fallback_model_dir`` (the adapter's base tokenizer_config). -> (template, gguf facts)."""
    template, info, facts = (None, None, {})
    if gguf is not None:
        template, info, facts = read_gguf_chat_info(gguf)
    if not template and fallback_model_dir:
        from ..models.folder_files import model_files, readable_view

        fb_files = model_files(fallback_model_dir)  # files linked out of the folder: not read
        fb_files.report_skipped(report, JOB)
        with readable_view(fallback_model_dir, fb_files) as view:
            fb_template, fb_info = read_hf_chat_info(view)
        if fb_template:
            if gguf is not None:
                report(Log(job=JOB, message=f"the GGUF has no chat template; using the one in "
                                            f"{fallback_model_dir}"))
            template = fb_template
            if info is None or not info.eos_token:
                info = fb_info
            else:
                info.extra_eos_tokens += [t for t in [fb_info.eos_token, *fb_info.extra_eos_tokens]
                                          if t and t not in info.extra_eos_tokens]
    result = convert_chat_template(template, info)
    if not result.verified:
        report(Log(job=JOB, level="warning",
                   message=f"the Ollama template ({result.family}) could not be checked against "
                           f"the model's chat template: {'; '.join(result.notes)[:300]}"))
    return result, facts


def check_quantize(quant: str | None, facts: dict, gguf: Path) -> str | None:
    """Ollama-side quantization only from F32/F16/BF16 files (it refuses the rest)."""
    q = normalize_quant(quant)
    if q is None:
        return None
    ft = facts.get("file_type")
    if ft not in QUANTIZABLE_FILE_TYPES:
        raise TailorError(
            f"{gguf.name} is already quantized (GGUF file type {ft}); Ollama can only quantize "
            "F16, BF16 or F32 files", hint="leave out --quant, or export the model as f16 first")
    return q


MIN_VERSION = (0, 5, 0)  # /api/create with "files" (older servers took a Modelfile text)


def check_version(client: OllamaClient, cancel) -> str:
    version = client.version(cancel)
    nums = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    if nums and nums != (0, 0, 0) and nums < MIN_VERSION:
        raise TailorError(f"Ollama {version} at {client.base_url} is too old for Tailor (it needs "
                          f"{'.'.join(map(str, MIN_VERSION))} or later)",
                          hint="update Ollama, or use --offline and `ollama create`")
    return version


def _check_collision(client: OllamaClient, name: str, replace: bool, cancel) -> None:
    existing = find_existing(name, client.list_models(cancel))
    if existing and not replace:
        raise OllamaNameTaken(f"Ollama already has a model named {existing}; it was left "
                              "untouched", hint="choose another --name, or pass --replace to "
                                                "replace it")


def send_gguf(client: OllamaClient, gguf: Path | str, name: str, *,
              settings: ModelSettings | None = None, quant: str | None = None,
              replace: bool = False, fallback_model_dir: Path | str | None = None,
              report: Reporter = null_reporter, cancel: CancelToken | None = None,
              progress_range: tuple[float, float] = (0.0, 1.0)) -> HandoffResult:
    """Create Ollama model ``name`` from ``gguf``. Success only after /api/show confirms it.

    Raises TailorError (OllamaError) with a message for every failure; the GGUF is never
    modified or removed.
    """
    gguf = Path(gguf)
    settings = settings or ModelSettings()
    model = parse_model_name(name).full
    if not gguf.is_file():
        raise TailorError(f"{gguf} does not exist or is not a file")
    check_gguf(gguf)  # a malformed file is refused before anything reads or uploads it
    tmpl, facts = derive_template(gguf, fallback_model_dir, report)
    if facts.get("general_type") == "adapter":
        raise TailorError(f"{gguf.name} is a LoRA adapter GGUF, not a model",
                          hint="use --adapter NAME --adapter-only --base MODEL, or export the "
                               "fused model")
    quantize = check_quantize(quant, facts, gguf)
    params = settings.parameters(tmpl.stops)
    a, b = progress_range
    span = b - a

    check_version(client, cancel)  # reachable and new enough, before any hashing
    _check_collision(client, model, replace, cancel)
    upload = stage_progress(report, JOB, "upload", a, a + 0.7 * span)
    digest, uploaded = client.ensure_blob(gguf, progress=upload, cancel=cancel)
    report(Log(job=JOB, message=("uploaded " if uploaded else "Ollama already has ") +
                                f"{gguf.name} ({digest[:19]}...)"))
    create = stage_progress(report, JOB, "create", a + 0.7 * span, a + 0.95 * span)
    statuses = client.create(model, files={gguf.name: digest}, template=tmpl.template,
                             system=settings.system, parameters=params, quantize=quantize,
                             progress=create, cancel=cancel)
    confirm(client, model, tmpl.template, tmpl.stops, cancel)
    stage_progress(report, JOB, "create", a, b)(1, 1, f"{model} is ready")
    return HandoffResult(model=model, created=True, host=client.base_url, digest=digest,
                         uploaded=uploaded, gguf=str(gguf), template=tmpl.to_dict(),
                         parameters=params, quantize=quantize, statuses=statuses,
                         command=f"ollama run {model}", notes=tmpl.notes)


def send_adapter(client: OllamaClient, adapter_gguf: Path | str, name: str, base: str, *,
                 settings: ModelSettings | None = None, replace: bool = False,
                 fallback_model_dir: Path | str | None = None, report: Reporter = null_reporter,
                 cancel: CancelToken | None = None,
                 progress_range: tuple[float, float] = (0.0, 1.0)) -> HandoffResult:
    """Create ``name`` as ``FROM base`` + ``ADAPTER adapter_gguf`` (base already in Ollama)."""
    adapter_gguf = Path(adapter_gguf)
    settings = settings or ModelSettings()
    model = parse_model_name(name).full
    base_name = parse_model_name(base).full
    check_gguf(adapter_gguf)
    _, _, facts = read_gguf_chat_info(adapter_gguf)
    check_adapter_architecture(facts.get("architecture", ""))
    tmpl, _ = derive_template(None, fallback_model_dir, report)
    # Without the base's chat template, keep the one the base already has in Ollama.
    inherit = tmpl.family == "none"
    template = None if inherit else tmpl.template
    params = settings.parameters([] if inherit else tmpl.stops)
    if inherit:
        params.pop("stop")
        report(Log(job=JOB, level="warning", message="no chat template found for the adapter's "
                                                     "base; the model keeps the base's template "
                                                     "and stops from Ollama"))
    a, b = progress_range
    span = b - a

    check_version(client, cancel)
    models = client.list_models(cancel)
    if not find_existing(base_name, models):
        raise TailorError(f"Ollama has no model {base_name} to put the adapter on",
                          hint=f"pull or create it first (`ollama pull {base}`), or leave out "
                               "--adapter-only to send the fused model")
    base_arch = (client.show(base_name, cancel).get("model_info") or {}).get(
        "general.architecture")
    if base_arch and facts.get("architecture") and base_arch != facts["architecture"]:
        raise TailorError(f"the adapter is for {facts['architecture']} but {base_name} is "
                          f"{base_arch}", hint="choose the base model the adapter was trained on")
    _check_collision(client, model, replace, cancel)
    upload = stage_progress(report, JOB, "upload", a, a + 0.7 * span)
    digest, uploaded = client.ensure_blob(adapter_gguf, progress=upload, cancel=cancel)
    create = stage_progress(report, JOB, "create", a + 0.7 * span, a + 0.95 * span)
    statuses = client.create(model, from_model=base_name, adapters={adapter_gguf.name: digest},
                             template=template, system=settings.system, parameters=params,
                             progress=create, cancel=cancel)
    confirm(client, model, template, params.get("stop", []), cancel)
    return HandoffResult(model=model, created=True, host=client.base_url, digest=digest,
                         uploaded=uploaded, gguf=str(adapter_gguf),
                         template={} if inherit else tmpl.to_dict(),
                         parameters=params, statuses=statuses, command=f"ollama run {model}",
                         notes=tmpl.notes)


def check_adapter_architecture(arch: str) -> None:
    """TailorError unless Ollama applies a GGUF LoRA adapter of llama.cpp architecture ``arch``
    (engine/capabilities.py); the others are fused and sent as one GGUF."""
    if not ollama_applies_adapter(arch):
        raise TailorError(
            f"Ollama cannot apply a LoRA adapter to a {arch or 'unknown'} model",
            hint="leave out --adapter-only: Tailor then fuses the adapter into the base and "
                 "sends one GGUF, which works for every architecture")


def confirm(client: OllamaClient, model: str, template: str | None, stops: list[str],
            cancel: CancelToken | None = None) -> dict:
    """/api/show must list the model with our template (when one was sent) and every stop."""
    shown = client.show(model, cancel)
    got = shown.get("template")
    if template is not None and got is not None and got.strip() != template.strip():
        raise OllamaError(f"Ollama created {model} but shows a different template than the one "
                          "sent", hint="check `ollama show --template " + model + "`")
    params_text = str(shown.get("parameters") or "") + str(shown.get("modelfile") or "")
    missing = [s for s in stops if s not in params_text]
    if missing:
        raise OllamaError(f"Ollama created {model} but does not show the stop parameters "
                          f"{missing}", hint=f"check `ollama show --parameters {model}`")
    return shown


def write_folder(out_dir: Path | str, name: str, *, gguf: Path | str | None = None,
                 adapter_gguf: Path | str | None = None, base: str | None = None,
                 settings: ModelSettings | None = None, fallback_model_dir=None,
                 replace: bool = False, quant: str | None = None,
                 report: Reporter = null_reporter) -> HandoffResult:
    """The no-server path: a folder with the GGUF, Modelfile and README.txt. ``quant`` (Ollama
    side, F16/BF16/F32 files only) goes into the printed ``ollama create --quantize`` command."""
    settings = settings or ModelSettings()
    model = parse_model_name(name).full
    for path in (gguf, adapter_gguf):
        if path is not None and Path(path).is_file():
            check_gguf(path)
    if adapter_gguf is not None:
        _, _, facts = read_gguf_chat_info(adapter_gguf)
        check_adapter_architecture(facts.get("architecture", ""))
        if not base:
            raise TailorError("--adapter-only needs --base MODEL (the base model's Ollama name)")
        tmpl, _ = derive_template(None, fallback_model_dir, report)
        from_ = parse_model_name(base).full
    else:
        tmpl, facts = derive_template(Path(gguf), fallback_model_dir, report)
        from_ = f"./{Path(gguf).name}"
    quantize = check_quantize(quant, facts, Path(gguf)) if gguf is not None else None
    inherit = adapter_gguf is not None and tmpl.family == "none"  # keep the base's template
    params = settings.parameters([] if inherit else tmpl.stops)
    spec = ModelfileSpec(from_=from_, template=None if inherit else tmpl.template,
                         stops=[] if inherit else tmpl.stops,
                         system=settings.system,
                         parameters={k: v for k, v in params.items() if k != "stop"})
    create = f"ollama create {name}" + (f" --quantize {quantize}" if quantize else "")
    folder = write_modelfile_folder(out_dir, name=name, spec=spec, gguf=gguf,
                                    adapter_gguf=adapter_gguf, overwrite=replace,
                                    template_family=tmpl.family, verified=tmpl.verified,
                                    create_command=create)
    command = f"cd {_shell_quote(str(folder))} && {create} -f Modelfile"
    return HandoffResult(model=model, created=False, gguf=str(gguf or adapter_gguf),
                         template=tmpl.to_dict(), parameters=params, modelfile_dir=str(folder),
                         quantize=quantize, command=command, notes=tmpl.notes)


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
