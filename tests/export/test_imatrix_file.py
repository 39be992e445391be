"""llama.cpp's imatrix files (engine/export/imatrix_file.py): the GGUF written as llama-imatrix
writes it and read back by gguf-py and by ggml's own C reader (libggml-base's
gguf_init_from_file, the parser common_imatrix_load uses), the legacy .dat read, and every
bad file refused with its name and a hint, left byte for byte as it was."""
from __future__ import annotations

import ctypes
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from engine.events import TailorError
from engine.export.imatrix_file import Imatrix, check_imatrix, load_imatrix, save_imatrix


def _matrix() -> Imatrix:
    rng = np.random.default_rng(0)
    return Imatrix(
        sums={"blk.0.attn_q.weight": rng.random(64, dtype=np.float32) * 100,
              "blk.1.ffn_down_exps.weight": rng.random(4 * 32, dtype=np.float32) * 10},
        counts={"blk.0.attn_q.weight": np.array([1024.0]),
                "blk.1.ffn_down_exps.weight": np.array([300.0, 0.0, 12.0, 700.0])},
        datasets=["/data/train.jsonl"], chunk_count=2, chunk_size=512)


def test_the_gguf_round_trips_through_gguf_py_as_llama_imatrix_lays_it_out(tmp_path):
    import gguf

    im = _matrix()
    path = save_imatrix(im, tmp_path / "m.imatrix.gguf")
    reader = gguf.GGUFReader(str(path))
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert keys == ["general.type", "imatrix.datasets", "imatrix.chunk_count",
                    "imatrix.chunk_size"]  # no general.architecture, as llama-imatrix
    f = reader.fields["general.type"]
    assert bytes(f.parts[f.data[0]]) == b"imatrix"
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors) == ["blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts",
                             "blk.1.ffn_down_exps.weight.in_sum2",
                             "blk.1.ffn_down_exps.weight.counts"]
    # ggml ne order: in_sum2 [n_cols, n_mat], counts [1, n_mat]
    assert [int(x) for x in tensors["blk.1.ffn_down_exps.weight.in_sum2"].shape] == [32, 4]
    assert [int(x) for x in tensors["blk.1.ffn_down_exps.weight.counts"].shape] == [1, 4]
    back = load_imatrix(path)
    assert back.datasets == im.datasets and (back.chunk_count, back.chunk_size) == (2, 512)
    for name in im.sums:
        np.testing.assert_array_equal(back.sums[name], im.sums[name])
        np.testing.assert_array_equal(back.counts[name], im.counts[name])
    w = back.weights()
    # llama-quantize's load_imatrix: sums / count in float32, 1 for an expert never reached
    np.testing.assert_array_equal(w["blk.0.attn_q.weight"],
                                  im.sums["blk.0.attn_q.weight"] / np.float32(1024))
    experts = w["blk.1.ffn_down_exps.weight"]
    assert experts.shape == (4, 32) and np.all(experts[1] == 1.0)
    np.testing.assert_array_equal(experts[3], im.sums["blk.1.ffn_down_exps.weight"][96:]
                                  / np.float32(700))


def _ggml_read(path: Path) -> dict:
    """What ggml's C GGUF reader (llama.cpp's, via llama-cpp-python's libggml-base) finds in
    the file: the general.type and dataset strings, the chunk keys, each tensor's values;
    the same calls common_imatrix_load makes."""
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))

    class Params(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]

    ctx = ctypes.c_void_p()
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, Params]
    g = lib.gguf_init_from_file(str(path).encode(), Params(False, ctypes.pointer(ctx)))
    assert g, "ggml's gguf_init_from_file refused the file"
    for fn, res, args in (("gguf_find_key", ctypes.c_int64, [ctypes.c_char_p]),
                          ("gguf_get_val_str", ctypes.c_char_p, [ctypes.c_int64]),
                          ("gguf_get_val_u32", ctypes.c_uint32, [ctypes.c_int64]),
                          ("gguf_get_arr_n", ctypes.c_size_t, [ctypes.c_int64]),
                          ("gguf_get_arr_str", ctypes.c_char_p, [ctypes.c_int64, ctypes.c_size_t]),
                          ("gguf_get_n_tensors", ctypes.c_int64, [])):
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = [ctypes.c_void_p, *args]
    for fn, res in (("ggml_get_first_tensor", ctypes.c_void_p), ("ggml_get_name", ctypes.c_char_p),
                    ("ggml_nelements", ctypes.c_int64), ("ggml_get_data", ctypes.c_void_p)):
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.ggml_get_next_tensor.restype = ctypes.c_void_p
    lib.ggml_get_next_tensor.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    key = lambda k: lib.gguf_find_key(g, k.encode())  # noqa: E731
    ds = key("imatrix.datasets")
    out = {"type": lib.gguf_get_val_str(g, key("general.type")).decode(),
           "datasets": [lib.gguf_get_arr_str(g, ds, i).decode()
                        for i in range(lib.gguf_get_arr_n(g, ds))],
           "chunk_count": lib.gguf_get_val_u32(g, key("imatrix.chunk_count")),
           "chunk_size": lib.gguf_get_val_u32(g, key("imatrix.chunk_size")), "tensors": {}}
    t = lib.ggml_get_first_tensor(ctx)
    while t:
        n = lib.ggml_nelements(t)
        data = ctypes.cast(lib.ggml_get_data(t), ctypes.POINTER(ctypes.c_float))
        out["tensors"][lib.ggml_get_name(t).decode()] = np.ctypeslib.as_array(data, (n,)).copy()
        t = lib.ggml_get_next_tensor(ctx, t)
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    lib.gguf_free(g)
    lib.ggml_free(ctx)
    return out


def test_llama_cpps_own_gguf_reader_reads_what_we_write(tmp_path):
    im = _matrix()
    got = _ggml_read(save_imatrix(im, tmp_path / "m.imatrix.gguf"))
    assert got["type"] == "imatrix" and got["datasets"] == ["/data/train.jsonl"]
    assert (got["chunk_count"], got["chunk_size"]) == (2, 512)
    for name, sums in im.sums.items():
        np.testing.assert_array_equal(got["tensors"][name + ".in_sum2"], sums)
        np.testing.assert_array_equal(got["tensors"][name + ".counts"], im.counts[name])


def _legacy_bytes(entries: dict[str, tuple[int, np.ndarray]], chunks=3, dataset=b"x.txt"):
    out = struct.pack("<i", len(entries))
    for name, (ncall, values) in entries.items():
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size)
        out += values.astype("<f4").tobytes()
    return out + struct.pack("<ii", chunks, len(dataset)) + dataset


def test_a_legacy_dat_file_reads_as_llama_quantize_reads_it(tmp_path):
    values = np.arange(1, 9, dtype=np.float32) * 6
    path = tmp_path / "old.dat"
    path.write_bytes(_legacy_bytes({"blk.0.attn_q.weight": (3, values)}))
    im = load_imatrix(path)
    assert im.legacy and im.datasets == ["x.txt"] and im.chunk_count == 3
    np.testing.assert_array_equal(im.weights()["blk.0.attn_q.weight"], values / np.float32(3))


def _model_gguf(path: Path) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = save_imatrix(_matrix(), tmp_path / "good.imatrix.gguf").read_bytes()
    truncated = tmp_path / "truncated.imatrix.gguf"
    truncated.write_bytes(good[: len(good) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a matrix\n" * 4)
    legacy_cut = tmp_path / "cut.dat"
    legacy_cut.write_bytes(_legacy_bytes({"blk.0.attn_q.weight": (1, np.ones(64))})[:60])
    huge_name = tmp_path / "huge.dat"
    huge_name.write_bytes(struct.pack("<ii", 1, 1 << 30) + b"\0" * 64)
    return {
        "missing": (tmp_path / "nowhere.gguf", "importance matrix not found"),
        "not gguf": (text, "is neither an imatrix GGUF nor a legacy imatrix .dat"),
        "model gguf": (_model_gguf(tmp_path / "model.gguf"),
                       "is a GGUF of type 'model', not an importance matrix"),
        "truncated": (truncated, "is not a readable GGUF file (truncated or damaged"),
        "legacy truncated": (legacy_cut, "is truncated or not an importance matrix"),
        "legacy huge name": (huge_name, "has a name of 1073741824 bytes"),
    }


@pytest.mark.parametrize("case", ["missing", "not gguf", "model gguf", "truncated",
                                  "legacy truncated", "legacy huge name"])
def test_bad_files_are_refused_by_name_and_left_unchanged(tmp_path, case):
    path, message = _bad_files(tmp_path)[case]
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    with pytest.raises(TailorError) as e:
        load_imatrix(path)
    assert message in e.value.message and str(path) in e.value.message
    assert e.value.hint
    assert (hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None) == before


def test_entries_that_do_not_fit_the_models_tensors_are_refused_by_tensor(tmp_path):
    im = _matrix()
    path = tmp_path / "m.gguf"
    shapes = {"blk.0.attn_q.weight": (64, 64), "blk.1.ffn_down_exps.weight": (4, 64, 32),
              "token_embd.weight": (100, 64)}
    assert check_imatrix(im, path, shapes) == 2
    with pytest.raises(TailorError) as e:
        check_imatrix(im, path, {**shapes, "blk.0.attn_q.weight": (64, 96)})
    assert e.value.message == (f"{path}: the matrix for blk.0.attn_q.weight has 64 values; "
                               "the model's blk.0.attn_q.weight has 96 columns = 96")
    assert "computed for another model" in e.value.hint
    with pytest.raises(TailorError) as e:
        check_imatrix(im, path, {**shapes, "blk.1.ffn_down_exps.weight": (8, 64, 16)})
    # 128 values fit 8 experts x 16 columns, but the file counted 4 experts
    assert e.value.message.endswith("blk.1.ffn_down_exps.weight counts 4 experts; the "
                                    "model's blk.1.ffn_down_exps.weight has 8")
    with pytest.raises(TailorError) as e:
        check_imatrix(im, path, {**shapes, "blk.1.ffn_down_exps.weight": (4, 64, 16)})
    assert "blk.1.ffn_down_exps.weight has 4 experts x 16 columns = 64" in e.value.message
    with pytest.raises(TailorError) as e:
        check_imatrix(im, path, {"output.weight": (10, 64)})
    assert "none of its 2 entries" in e.value.message


def test_saving_never_overwrites_a_file(tmp_path):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "m.imatrix.gguf"
    target.write_bytes(b"user's file")
    with pytest.raises(TailorError, match="already exists"):
        save_imatrix(_matrix(), target)
    assert target.read_bytes() == b"user's file"
    assert [p.name for p in target.parent.iterdir()] == ["m.imatrix.gguf"]
