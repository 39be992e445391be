"""`tailor export --imatrix auto|FILE` end to end on a trained fixture adapter: the matrix is
computed over the adapter's own training split (prepared by engine/data as training did),
saved beside the GGUF in llama.cpp's format, named in the export record, and used by the
encoders; a saved matrix given back with --imatrix FILE gives the same file; nothing of the
user's is changed; bad matrices and options are refused before any work."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.export.gguf_export import record_path
from engine.export.imatrix_file import load_imatrix, save_imatrix
from tests.conftest import snapshot_tree
from tests.evaluate.test_parity import _trained


def _export(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["export", *args])
    return code, err.getvalue()


def _tensor_bytes(path: Path) -> dict[str, bytes]:
    import gguf

    return {t.name: bytes(t.data) for t in gguf.GGUFReader(str(path)).tensors}


def _training_tokens(info) -> int:
    from engine.data import DataConfig, prepare_dataset
    from engine.models.tokenizer import load_tokenizer

    settings = DataConfig(**info.manifest["data_settings"])
    prepared = prepare_dataset(Path(info.manifest["dataset"]["path"]),
                               load_tokenizer(info.manifest["base_model"]["path"]), settings)
    return sum(len(e.tokens) for e in prepared.train)


def _adapter_files(info) -> dict[str, bytes]:
    """The adapter's files but its exports list (which an export adds itself to)."""
    from engine.adapter_exports import EXPORTS_FILE

    return {k: v for k, v in snapshot_tree(info.path).items() if k != EXPORTS_FILE}


@pytest.fixture
def trained(tiny_model, tmp_path):
    return _trained(tiny_model("llama3"), tmp_path, "im")


def test_auto_computes_saves_records_and_uses_the_matrix(trained, tiny_model, tmp_path,
                                                         tailor_home):
    info = trained
    data = Path(info.manifest["dataset"]["path"])
    before = (snapshot_tree(tiny_model("llama3")), data.read_bytes(), _adapter_files(info))
    out = tmp_path / "out" / "im-q2_k.gguf"
    code, err = _export("--adapter", "im", "--quant", "q2_k", "--imatrix", "auto",
                        "--imatrix-ctx", "64", "--out", str(out), "--no-verify")
    assert code == 0, err
    saved = out.with_name("im-q2_k.imatrix.gguf")
    im = load_imatrix(saved)
    assert im.datasets == [str(data)] and im.chunk_size == 64
    tokens = _training_tokens(info)
    assert im.chunk_count == -(-tokens // 64) - (tokens % 64 and tokens % 64 < 16)
    # every blk matrix, each having seen every token of the chunks once
    assert len(im.sums) == 7 * 2 and {tuple(c) for c in im.counts.values()} == {
        (float(sum(min(64, tokens - s) for s in range(0, tokens, 64)
                   if tokens - s >= 16)),)}
    record = json.loads(record_path(out).read_text())["metadata"]["imatrix"]
    assert record["computed"] is True and record["path"] == str(saved)
    assert record["data"] == str(data) and record["data_kind"] == "training split"
    assert record["entries"] == 14 and record["tensors_weighted"] > 0
    assert record["chunk_count"] == im.chunk_count and len(record["sha256"]) == 64
    assert before == (snapshot_tree(tiny_model("llama3")), data.read_bytes(),
                      _adapter_files(info))

    # the same export without a matrix writes other Q2_K bytes: the matrix was used
    plain = tmp_path / "out" / "plain-q2_k.gguf"
    assert _export("--adapter", "im", "--quant", "q2_k", "--out", str(plain),
                   "--no-verify")[0] == 0
    assert _tensor_bytes(plain) != _tensor_bytes(out)
    # the saved matrix given back: byte for byte the same tensors
    again = tmp_path / "out" / "again-q2_k.gguf"
    code, err = _export("--adapter", "im", "--quant", "q2_k", "--imatrix", str(saved),
                        "--out", str(again), "--no-verify")
    assert code == 0, err
    assert _tensor_bytes(again) == _tensor_bytes(out)
    given = json.loads(record_path(again).read_text())["metadata"]["imatrix"]
    assert given["computed"] is False and given["sha256"] == record["sha256"]


def test_auto_never_overwrites_a_matrix_beside_the_output(trained, tmp_path):
    out = tmp_path / "im-q3_k_m.gguf"
    existing = out.with_name("im-q3_k_m.imatrix.gguf")
    existing.write_bytes(b"the user's own matrix")
    code, err = _export("--adapter", "im", "--quant", "q3_k_m", "--imatrix", "auto",
                        "--out", str(out), "--no-verify")
    assert code == 1
    assert f"{existing} already exists; it was left untouched" in err
    assert f"--imatrix {existing}" in err  # the hint: use it
    assert existing.read_bytes() == b"the user's own matrix" and not out.exists()


def test_a_matrix_of_another_model_is_refused_naming_file_and_tensor(trained, tmp_path):
    from engine.export.imatrix_file import Imatrix

    other = tmp_path / "other.imatrix.gguf"
    save_imatrix(Imatrix({"blk.0.attn_q.weight": np.ones(96, np.float32)},
                         {"blk.0.attn_q.weight": np.array([10.0])}, ["x"], 1, 512), other)
    before = other.read_bytes()
    out = tmp_path / "x.gguf"
    code, err = _export("--adapter", "im", "--quant", "q2_k", "--imatrix", str(other),
                        "--out", str(out), "--no-verify")
    assert code == 1
    assert (f"{other}: the matrix for blk.0.attn_q.weight has 96 values; the model's "
            "blk.0.attn_q.weight has 64 columns = 64") in err
    assert "computed for another model" in err and "Traceback" not in err
    assert other.read_bytes() == before and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--imatrix", "nowhere.gguf"], "importance matrix not found: "),
    (["--imatrix-text", "t.txt"], "--imatrix-text names the text to compute a matrix over"),
    (["--imatrix", "auto", "--imatrix-ctx", "8"], "imatrix_ctx = 8 is below the minimum 16"),
    (["--imatrix", "auto", "--adapter-only"], "--adapter-only writes the LoRA adapter alone"),
])
def test_bad_options_are_refused_before_any_work(tiny_model, tmp_path, args, message):
    model = tiny_model("llama3")
    code, err = _export("--model", str(model), "--quant", "q2_k", "--out",
                        str(tmp_path / "x.gguf"), *args)
    assert code == 1 and message in err and "Traceback" not in err
    assert list(tmp_path.glob("*.gguf")) == []


def test_auto_over_a_text_file_for_a_model_folder(tiny_model, tmp_path):
    """An F16 MoE model folder (MLX's CPU gather for stacked experts runs only in float32:
    the activations are computed in float32, as llama.cpp computes them)."""
    from tests.export.helpers import f16_copy

    model = f16_copy(tiny_model("qwen3_moe"), tmp_path / "moe-f16")
    code, err = _export("--model", str(model), "--quant", "q3_k_m", "--imatrix", "auto",
                        "--out", str(tmp_path / "m.gguf"), "--no-verify")
    assert code == 1 and "add --imatrix-text FILE" in err
    text = tmp_path / "calibration.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    code, err = _export("--model", str(model), "--quant", "q3_k_m", "--imatrix", "auto",
                        "--imatrix-text", str(text), "--imatrix-ctx", "128",
                        "--out", str(tmp_path / "m.gguf"), "--no-verify")
    assert code == 0, err
    im = load_imatrix(tmp_path / "m.imatrix.gguf")
    assert im.datasets == [str(text)]
    record = json.loads(record_path(tmp_path / "m.gguf").read_text())["metadata"]["imatrix"]
    assert record["activations"] == "float32" and record["data_kind"] == "text file"
    experts = im.counts["blk.0.ffn_down_exps.weight"]
    assert experts.size == 8 and experts.sum() == 2 * im.counts["blk.0.attn_q.weight"][0]


def test_auto_for_an_adapter_without_its_dataset_says_so(tiny_model, tmp_path):
    from tests.export.adapters import make_library_adapter

    make_library_adapter("nodata", tiny_model("llama3"))  # its record names no dataset
    out = tmp_path / "x.gguf"
    code, err = _export("--adapter", "nodata", "--quant", "q2_k", "--imatrix", "auto",
                        "--out", str(out), "--no-verify")
    assert code == 1
    assert "the dataset adapter 'nodata' was trained on is missing: (not recorded)" in err
    assert "--imatrix-text FILE" in err and not out.exists()
    assert not out.with_name("x.imatrix.gguf").exists()


def test_a_tokenizer_refusal_comes_before_a_matrix_is_saved(tmp_path):
    """The export's pre-tokenizer refusal is made before the matrix is computed, so no
    matrix is left beside a GGUF that was never written."""
    from tokenizers import pre_tokenizers

    from engine.tiny_models import cached_tiny_model
    from tests.export.pretok_models import (_byte_level, _split, model_with_tokenizer,
                                            rich_corpus, train_tokenizer)
    from tests.export.test_pretokenizer_refusal import WORD_PAIRS

    tok = train_tokenizer(pre_tokenizers.Sequence([_split(WORD_PAIRS), _byte_level(False)]),
                          vocab_size=3000, texts=rich_corpus())
    model = model_with_tokenizer(cached_tiny_model("llama3"), tmp_path / "pairs", tok)
    text = tmp_path / "calibration.txt"
    text.write_text("Some calibration text for the matrix, long enough. " * 20)
    (tmp_path / "out").mkdir()
    code, err = _export("--model", str(model), "--quant", "q2_k", "--imatrix", "auto",
                        "--imatrix-text", str(text), "--out", str(tmp_path / "out" / "m.gguf"),
                        "--no-verify")
    assert code == 1 and "llama.cpp has no pre-tokenizer that reproduces this one" in err
    assert list((tmp_path / "out").iterdir()) == []
