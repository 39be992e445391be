"""Archives and other binary containers are recognised by their first bytes, whatever the
file's name, and refused with what they are and what to do (issue 11: an uncompressed zip named
.jsonl was read as text, 38 of 40 lines accepted)."""
from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import lzma
import pickle
import sqlite3
import struct
import tarfile
import zipfile

import numpy as np
import pytest

from engine.data import DataConfig, prepare_dataset
from engine.events import TailorError
from tests.data.conftest import chat, jsonl

TEXT = jsonl([chat(i) for i in range(40)])


def _zip(compression: int, member: str = "train.jsonl") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        z.writestr(member, TEXT)
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("train.jsonl")
        info.size = len(TEXT)
        t.addfile(info, io.BytesIO(TEXT))
    return buf.getvalue()


def _sqlite(tmp_path) -> bytes:
    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("create table t (prompt text, completion text)")
        c.executemany("insert into t values (?, ?)", [(f"q{i}", f"a{i}") for i in range(40)])
    data = db.read_bytes()
    db.unlink()
    return data


def _safetensors() -> bytes:
    from safetensors.numpy import save

    return save({"w": np.zeros((4, 4), np.float32)})


def _gguf() -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 0)


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(10))
    return buf.getvalue()


# (what the message says it is, the bytes, a word from the hint)
CONTAINERS = {
    "zip_stored": ("a ZIP archive", lambda tmp: _zip(zipfile.ZIP_STORED), "unpack it first"),
    "zip_deflated": ("a ZIP archive", lambda tmp: _zip(zipfile.ZIP_DEFLATED), "unpack it first"),
    "xlsx": ("an Office document (xlsx/docx, a ZIP archive inside)",
             lambda tmp: _zip(zipfile.ZIP_DEFLATED, "[Content_Types].xml"), "save it as CSV"),
    "gzip": ("a gzip-compressed file", lambda tmp: gzip.compress(TEXT), "gunzip"),
    "bzip2": ("a bzip2-compressed file", lambda tmp: bz2.compress(TEXT), "bunzip2"),
    "xz": ("an xz-compressed file", lambda tmp: lzma.compress(TEXT), "unxz"),
    # No zstd, 7z or rar writer in the standard library: their magic bytes, then the text.
    "zstd": ("a zstd-compressed file", lambda tmp: b"\x28\xb5\x2f\xfd\x24\x00" + TEXT, "unzstd"),
    "7z": ("a 7-Zip archive", lambda tmp: b"7z\xbc\xaf\x27\x1c\x00\x04" + TEXT, "unpack"),
    "rar": ("a RAR archive", lambda tmp: b"Rar!\x1a\x07\x01\x00" + TEXT, "unpack"),
    "tar": ("a tar archive", lambda tmp: _tar(), "unpack"),
    "pdf": ("a PDF document", lambda tmp: b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
            + TEXT, "copy its text"),
    "sqlite": ("an SQLite database", _sqlite, "sqlite3 -csv"),
    "parquet": ("a Parquet file", lambda tmp: b"PAR1\x15\x04\x15\x00\x15" + TEXT + b"PAR1",
                "read_parquet"),
    "safetensors": ("a safetensors file (model weights)", lambda tmp: _safetensors(),
                    "choose the dataset file"),
    "gguf": ("a GGUF file (model weights)", lambda tmp: _gguf(), "choose the dataset file"),
    "pickle": ("a Python pickle", lambda tmp: pickle.dumps([chat(i) for i in range(40)]),
               "never opened"),
    "npy": ("a NumPy array file", lambda tmp: _npy(), "choose the dataset file"),
    "png": ("a PNG image", lambda tmp: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + TEXT,
            "choose the dataset file"),
    "jpeg": ("a JPEG image", lambda tmp: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + TEXT,
             "choose the dataset file"),
}


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".txt"])
@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_container_is_refused_by_its_first_bytes(write, tokenizer, tmp_path, kind, ext):
    what, make, hint = CONTAINERS[kind]
    data = make(tmp_path)
    path = write(f"data{ext}", data)
    with pytest.raises(TailorError) as err:
        prepare_dataset(path, tokenizer(), DataConfig())
    assert err.value.message == f"data{ext}: this is {what}, not a text dataset"
    assert hint in err.value.hint
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_stored_zip_was_the_reported_case(write, tokenizer):
    # The reported file: 40 chat lines in an uncompressed zip, whose text is readable verbatim.
    data = _zip(zipfile.ZIP_STORED)
    assert TEXT in data
    with pytest.raises(TailorError, match=r"^z\.jsonl: this is a ZIP archive, not a text "
                                          r"dataset"):
        prepare_dataset(write("z.jsonl", data), tokenizer(), DataConfig())


def test_unknown_binary_header_with_a_nul_in_the_first_line(write, tokenizer):
    data = b"XBIN\x01\x00\x02" + TEXT
    path = write("blob.jsonl", data)
    with pytest.raises(TailorError) as err:
        prepare_dataset(path, tokenizer(), DataConfig())
    assert err.value.message == ("blob.jsonl:1: this is not a text file (a NUL byte at byte 6: "
                                 "binary data)")
    assert path.read_bytes() == data


@pytest.mark.parametrize("bom,codec", [(codecs.BOM_UTF16_LE, "utf-16-le"),
                                       (codecs.BOM_UTF16_BE, "utf-16-be")])
def test_utf16_text_with_its_nul_bytes_is_still_read(write, tokenizer, bom, codec):
    data = bom + TEXT.decode().encode(codec)
    assert b"\x00" in data[:64]
    prepared = prepare_dataset(write("u16.jsonl", data), tokenizer(), DataConfig())
    assert prepared.report.good == 40 and not prepared.report.problems
    assert prepared.report.encoding == f"{codec}-bom"


@pytest.mark.parametrize("first", [b"PAR1 of the story begins here.", b"BZh9 is a label.",
                                   b"GGUF notes and PK tips", b"7z and RAR are formats."])
def test_text_that_starts_like_a_magic_number_is_still_text(write, tokenizer, first):
    data = first + b"\n\n" + b"\n\n".join(f"Block {i}.".encode() for i in range(5)) + b"\n"
    prepared = prepare_dataset(write("t.txt", data), tokenizer(), DataConfig())
    assert prepared.report.good == 6
