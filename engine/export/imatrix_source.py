"""The importance matrix an export uses: a file the user gave (read and checked against the
model's tensors), or ``auto``: computed in MLX over the adapter's training split (prepared by
engine/data with the run's own data settings, as training prepared it) or a text file, and
saved beside the GGUF as ``<name>.imatrix.gguf`` (never over an existing file).

-> ``ImatrixWeights``: the mapping the encoders take (GGUF tensor name -> float32 weights per
input column) with ``record``, what the export record says about the matrix.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..events import ErrorCode, Job, TailorError
from .imatrix_config import AUTO, ImatrixConfig
from .imatrix_file import Imatrix, check_imatrix, load_imatrix, save_imatrix


class ImatrixWeights(dict):
    """GGUF tensor name -> float32 per-column weights (what llama-quantize passes as
    quant_weights), with ``record``: where the matrix came from, for the export record."""

    def __init__(self, weights: dict, record: dict):
        super().__init__(weights)
        self.record = record

    def gguf_metadata(self) -> dict:
        """The keys llama-quantize --imatrix writes into the quantized file."""
        r = self.record
        meta = {"quantize.imatrix.file": str(r["path"])[:127],
                "quantize.imatrix.entries_count": len(self)}
        if r.get("datasets"):
            meta["quantize.imatrix.dataset"] = str(r["datasets"][0])[:127]
        if r.get("chunk_count"):
            meta["quantize.imatrix.chunks_count"] = int(r["chunk_count"])
        return meta


def imatrix_path_for(out: Path) -> Path:
    """Where ``--imatrix auto`` keeps the matrix of the export ``out``: beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".imatrix.gguf")


def check_imatrix_options(cfg: ImatrixConfig, out: Path, *, adapter: bool,
                          adapter_only: bool = False) -> None:
    """Refuse inconsistent options before any work (cheap: no model is read)."""
    from ..configs import validate_ranges

    problems = validate_ranges(cfg)
    if problems:
        raise TailorError("; ".join(problems), hint="`tailor export --help` lists the ranges")
    if not cfg.imatrix:
        if cfg.imatrix_text:
            raise TailorError("--imatrix-text names the text to compute a matrix over; it "
                              "needs --imatrix auto", hint="add --imatrix auto")
        return
    if adapter_only:
        raise TailorError("--imatrix guides the quantizer of a whole model; --adapter-only "
                          "writes the LoRA adapter alone", hint="leave out one of them")
    if cfg.imatrix != AUTO:
        if cfg.imatrix_text:
            raise TailorError("--imatrix-text is for --imatrix auto; a matrix file is used "
                              "as it is", hint="leave out --imatrix-text")
        load_imatrix(cfg.imatrix)  # missing / foreign / damaged: refused now
        return
    if not adapter and not cfg.imatrix_text:
        raise TailorError("--imatrix auto with --model has no training data to compute the "
                          "matrix over", hint="add --imatrix-text FILE (plain text), or "
                          "export a library adapter with --adapter NAME")
    if cfg.imatrix_text and not Path(cfg.imatrix_text).expanduser().is_file():
        raise TailorError(f"text file not found: {Path(cfg.imatrix_text).expanduser()}",
                          hint="--imatrix-text takes a plain UTF-8 text file")
    target = imatrix_path_for(out)
    if target.exists():
        raise TailorError(f"{target} already exists; it was left untouched",
                          hint=f"use it with --imatrix {target}, or remove it to compute a "
                               "new one", code=ErrorCode.NAME_TAKEN)


class PendingImatrix:
    """``--imatrix auto`` not yet computed: export_gguf calls it after its Started event with
    the first ``share`` of its bar, so the whole export is one bar that never goes back."""

    share = 0.4  # collection costs about as much CPU as the export (bench/imatrix_quality.py)

    def __init__(self, source, out: Path, quant: str, cfg: ImatrixConfig):
        self.source, self.out, self.quant, self.cfg = source, out, quant, cfg

    def __call__(self, job: Job) -> ImatrixWeights | None:
        return resolve_imatrix(self.source, self.out, self.quant, self.cfg, job)


def imatrix_for_export(source, out: Path, quant: str, cfg: ImatrixConfig, job: Job, *,
                       adapter_only: bool = False, allow_tokenizer_mismatch: bool = False
                       ) -> ImatrixWeights | PendingImatrix | None:
    """``resolve_imatrix`` after the export's own refusals (plan.plan_export: the type, the
    output name, the family, the space, the pre-tokenizer), so none of them waits for
    minutes of collection or comes after a matrix was saved for a file never written.
    ``auto``: a PendingImatrix, which the export computes as its first stage."""
    from .plan import plan_export

    check_imatrix_options(cfg, Path(out), adapter=not isinstance(source, Path),
                          adapter_only=adapter_only)
    if not cfg.imatrix:
        return None
    plan_export(source, out, quant, adapter_only=adapter_only,
                allow_tokenizer_mismatch=allow_tokenizer_mismatch)
    if cfg.imatrix == AUTO:
        return PendingImatrix(source, out, quant, cfg)
    return resolve_imatrix(source, out, quant, cfg, job)


def resolve_imatrix(source, out: Path, quant: str, cfg: ImatrixConfig,
                    job: Job) -> ImatrixWeights | None:
    """The matrix for exporting ``source`` (an adapter name / AdapterInfo, or a model folder
    Path) to ``out``: None without ``--imatrix``; a given file read and checked against the
    model's tensors; ``auto`` computed and saved beside ``out``."""
    from ..atomic import sha256_file

    check_imatrix_options(cfg, Path(out), adapter=not isinstance(source, Path))
    if not cfg.imatrix:
        return None
    if cfg.imatrix == AUTO:
        imatrix, record = _compute(source, cfg, job)
        path = save_imatrix(imatrix, imatrix_path_for(Path(out)))
        job.log(f"importance matrix of {imatrix.entries()} tensors over {imatrix.chunk_count} "
                f"chunks saved to {path}")
    else:
        path = Path(cfg.imatrix).expanduser()
        imatrix = load_imatrix(path)
        _check_against_model(imatrix, path, source, quant)
        record = {"computed": False}
    record.update(path=str(path), sha256=sha256_file(path), format="legacy .dat"
                  if imatrix.legacy else "gguf", entries=imatrix.entries(),
                  datasets=list(imatrix.datasets), chunk_count=imatrix.chunk_count,
                  chunk_size=imatrix.chunk_size)
    return ImatrixWeights(imatrix.weights(), record)


def _base_dir(source) -> tuple[object, dict | None, Path]:
    """(AdapterInfo or None, adapter config, base folder)."""
    from ..fuse import resolve_adapter

    if isinstance(source, Path):
        return None, None, source.expanduser()
    return resolve_adapter(source)


def _check_against_model(imatrix: Imatrix, path: Path, source, quant: str) -> None:
    """A given matrix's entries against the GGUF tensors the export plans (names and
    sizes). An MLX-quantized base's packed shapes are not the tensors': the encoders check
    those sizes as they go."""
    from ..models.load import read_config
    from .architectures import arch_info, is_mlx_quantized
    from .safetensors_stream import list_tensors
    from .write import plan_tensors

    _info, _cfg, base_dir = _base_dir(source)
    config = read_config(base_dir)
    if is_mlx_quantized(config):
        return
    planned = plan_tensors(arch_info(config, str(base_dir)), list_tensors(base_dir), quant)
    check_imatrix(imatrix, path, {p.name: tuple(p.shape) for p in planned})


def _compute(source, cfg: ImatrixConfig, job: Job) -> tuple[Imatrix, dict]:
    """The tokens first (with the tokenizer alone: a dataset that is missing or too short
    is refused before the model loads), then the model in MLX and its matrix over them."""
    from ..models.tokenizer import load_tokenizer
    from .imatrix import collect_imatrix, cut_chunks, gguf_names, in_float32

    info, adapter_config, base_dir = _base_dir(source)
    tokenizer = load_tokenizer(base_dir)
    if cfg.imatrix_text:
        text = Path(cfg.imatrix_text).expanduser()
        tokens, datasets = _text_tokens(text, tokenizer), [str(text)]
        record = {"computed": True, "data": str(text), "data_kind": "text file"}
    else:
        tokens, data = _training_tokens(info, tokenizer, job)
        datasets = [data["data"]]
        record = {"computed": True, **data}
    chunks = cut_chunks(tokens, cfg.imatrix_ctx, _bos_id(tokenizer), cfg.imatrix_chunks)
    if not chunks:
        raise TailorError(f"{datasets[0]} gives {len(tokens)} tokens, too few for an "
                          "importance matrix (at least 16 are needed)",
                          hint="give more text with --imatrix-text FILE")
    model, config = _load(info, adapter_config, base_dir, job)
    record["activations"] = in_float32(model)
    imatrix = collect_imatrix(model, gguf_names(model, config, str(base_dir)), chunks, job,
                              datasets=datasets, ctx=cfg.imatrix_ctx)
    record["tokens"] = sum(len(c) for c in chunks)
    return imatrix, record


def _load(info, adapter_config: dict | None, base_dir: Path, job: Job):
    """(MLX model in full precision, its config): the adapter fused into its base, or the
    model folder (dequantized when MLX-quantized)."""
    from ..fuse import fused_model
    from ..models.load import load_model

    job.log("loading the model for the importance matrix")
    if info is not None:
        model, config = fused_model(info, adapter_config, base_dir)
    else:
        from mlx_lm.utils import dequantize_model

        model, _tokenizer, config = load_model(base_dir)
        if config.get("quantization"):
            model = dequantize_model(model)
    model.eval()
    job.cancel.raise_if_cancelled()
    return model, config


def _training_tokens(info, tokenizer, job: Job) -> tuple[list[int], dict]:
    """The adapter's training split, prepared with the run's data settings (so rendered and
    tokenized as training saw it), as one stream; its record (data file, sha256, examples)."""
    from ..data import DataConfig, prepare_dataset

    ds = info.manifest.get("dataset") or {}
    path = Path(ds.get("path") or "")
    if not ds.get("path") or not path.is_file() and not path.is_dir():
        raise TailorError(f"the dataset adapter {info.name!r} was trained on is missing: "
                          f"{ds.get('path') or '(not recorded)'}",
                          hint="put it back, or compute the matrix over a text file with "
                               "--imatrix-text FILE", code=ErrorCode.BAD_INPUT)
    saved = dict(info.manifest.get("data_settings") or {})
    known = {f.name for f in dataclasses.fields(DataConfig)}
    settings = DataConfig(**{k: v for k, v in saved.items() if k in known})
    settings.preview_count, settings.min_examples = 0, 1
    prepared = prepare_dataset(path, tokenizer, settings, cancel=job.cancel, job=job.name)
    if ds.get("sha256") and prepared.sha256 != ds["sha256"]:
        job.log(f"{path} changed since adapter {info.name!r} was trained on it; the "
                "importance matrix is computed over its current training split",
                level="warning")
    tokens = [int(t) for e in prepared.train for t in e.tokens]
    return tokens, {"data": str(path), "data_kind": "training split",
                    "data_sha256": prepared.sha256, "data_examples": len(prepared.train)}


def _text_tokens(path: Path, tokenizer) -> list[int]:
    """A plain text file tokenized as llama-imatrix does (with the tokenizer's BOS)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TailorError(f"{path} is not UTF-8 text (byte {e.start})",
                          hint="--imatrix-text takes a plain UTF-8 text file") from e
    except OSError as e:
        raise TailorError(f"{path} cannot be read: {e.strerror or e}") from e
    import logging

    # (transformers warns that a whole file is longer than the model's context: it is cut
    # into chunks after tokenizing, as llama-imatrix does)
    quiet = logging.getLogger("transformers.tokenization_utils_base")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return [int(t) for t in tokenizer.encode(text)]
    finally:
        quiet.setLevel(level)


def _bos_id(tokenizer) -> int | None:
    """BOS when the tokenizer adds one (llama-imatrix puts it at every chunk's start)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer.encode("a")
    return int(bos) if ids and ids[0] == bos else None


def imatrix_from_args(args, source, job: Job) -> ImatrixWeights | PendingImatrix | None:
    """`tailor export`'s --imatrix options -> the matrix for its export (None without)."""
    from ..configs import overrides_from_args

    cfg = ImatrixConfig(**overrides_from_args(ImatrixConfig, args))
    if args.format == "peft" and cfg.imatrix:
        raise TailorError("--imatrix guides the GGUF quantizer; --format peft writes the "
                          "adapter's own weights", hint="leave out --imatrix")
    return imatrix_for_export(source, Path(args.out).expanduser(), args.quant, cfg, job,
                              adapter_only=args.adapter_only,
                              allow_tokenizer_mismatch=args.allow_tokenizer_mismatch)
