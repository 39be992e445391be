"""Load a resolved model folder with mlx-lm (never trusting remote code), optionally quantized."""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

from ..events import TailorError
from .folder_files import model_files, readable_view
from .safetensors_check import check_model_weights


def read_config(folder: Path) -> dict:
    """config.json as a dict; TailorError when it is unreadable or links out of the folder."""
    path = model_files(folder).require("config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TailorError(f"{folder}/config.json is unreadable: {e}") from e


def mlx_implementation(config: dict) -> str | None:
    """The name of mlx-lm's module for this config (e.g. "llama" for a Mistral), else None."""
    try:
        from mlx_lm.utils import _get_classes

        model_class, _ = _get_classes(config=config)
    except Exception:  # noqa: BLE001 - an unknown or broken model type: no implementation
        return None
    return model_class.__module__.rsplit(".", 1)[-1]


def custom_code_note(config: dict) -> str:
    """A line for the user when config.json asks for the model's own Python code (``auto_map``,
    transformers' trust_remote_code path), which Tailor never runs; "" otherwise."""
    auto_map = config.get("auto_map")
    if not auto_map:
        return ""
    if isinstance(auto_map, dict):
        entries = ", ".join(f"{k}: {v}" for k, v in auto_map.items())
    else:
        entries = str(auto_map)
    if len(entries) > 200:
        entries = entries[:197] + "..."
    impl = mlx_implementation(config)
    uses = (f"uses mlx-lm's own {impl} implementation" if impl else
            f"mlx-lm has no implementation of model type {config.get('model_type')!r}")
    return (f"config.json asks for custom code (auto_map: {entries}); Tailor never runs code "
            f"from a model folder and {uses}")


def load_model(folder: Path | str, quantize_bits: int | None = None, group_size: int = 64,
               tokenizer=None):
    """(model, tokenizer, config) for a model folder; ``quantize_bits`` 4 or 8 quantizes on load.
    ``tokenizer``: one ``load_tokenizer(folder)`` gave already (reused, its end-of-sequence ids
    set from the config as loaded here) instead of loading it a second time.

    An already quantized base (e.g. mlx-community 4-bit) loads as it is (QLoRA). Raises
    TailorError for an unsupported architecture or unreadable weights.
    """
    from mlx_lm.utils import load_model as mlx_load_model, quantize_model

    from .resolve import check_model_folder
    from .tokenizer import load_tokenizer, set_eos_token_ids  # no custom code, faithful

    folder = Path(folder)
    if quantize_bits not in (None, 0, 4, 8):
        raise TailorError(f"--quantize-base must be 4 or 8, not {quantize_bits}")
    check_model_folder(folder)
    model_file = read_config(folder).get("model_file")
    if model_file:  # mlx-lm's own custom-module key (it refuses it without trust_remote_code)
        raise TailorError(f"{folder}/config.json names a custom model module ({model_file!r}) "
                          "to build the architecture; Tailor never runs code from a model folder",
                          hint="use a model whose architecture mlx-lm implements")
    check_model_weights(folder)  # MLX's loader turns a bad header into a raw RuntimeError
    files = model_files(folder)
    # mlx-lm and transformers read files by name: they get a view without the skipped ones
    with readable_view(folder, files) as view:
        try:
            model, config = mlx_load_model(view, trust_remote_code=False)
        except ValueError as e:
            mt = read_config(folder).get("model_type", "?")
            raise TailorError(f"cannot load {folder}: model type {mt!r} is not supported by "
                              f"mlx-lm ({e})") from e
        except FileNotFoundError as e:
            raise TailorError(f"cannot load {folder}: {e}") from e
        if tokenizer is None:
            tokenizer = load_tokenizer(folder, eos_token_ids=config.get("eos_token_id"))
        else:
            set_eos_token_ids(tokenizer, config.get("eos_token_id"))
    if quantize_bits:
        if config.get("quantization"):
            raise TailorError(f"{folder} is already quantized "
                              f"({config['quantization'].get('bits')} bits); "
                              "--quantize-base applies to full-precision models only")
        # mlx-lm prints an [INFO] line; stdout may be the JSON event stream, so divert it
        with contextlib.redirect_stdout(sys.stderr):
            model, config = quantize_model(model, config, group_size, quantize_bits)
    return model, tokenizer, config


def model_fingerprint(folder: Path | str) -> str:
    """A sha256 over the folder's file names, sizes and contents (big weight files sampled).

    Hashing every byte of a multi-GB model at each run start would take minutes, so files over
    64 MB contribute their size and their first and last 4 MB.
    """
    h = hashlib.sha256()
    for p in model_files(folder).glob("*"):  # files linked out of the folder are not read
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= 64 << 20:
                h.update(f.read())
            else:
                h.update(f.read(4 << 20))
                f.seek(size - (4 << 20))
                h.update(f.read())
    return h.hexdigest()


def count_parameters(model) -> int:
    """Parameters as the model defines them (quantized weights counted unpacked)."""
    from mlx_lm.utils import get_total_parameters

    return int(get_total_parameters(model))


def weight_bytes(model) -> int:
    from mlx.utils import tree_flatten

    return int(sum(v.nbytes for _, v in tree_flatten(model.parameters())))
