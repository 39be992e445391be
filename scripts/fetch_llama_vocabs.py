"""Put llama.cpp's tokenizer test vocabularies into a folder (``make setup`` runs this).

llama.cpp's repository carries vocabularies of real models with their expected token ids
(``models/ggml-vocab-NAME.gguf`` with ``.gguf.inp`` and ``.gguf.out``); the llama-cpp-python
source distribution vendors them. This downloads the sdist of the llama-cpp-python version
installed (pip, at install time: the tests never use the network) and extracts only those
files, flat, into DEST. Usage: python scripts/fetch_llama_vocabs.py DEST
"""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MEMBER_DIR = "/vendor/llama.cpp/models/"
PREFIX = "ggml-vocab-"


def main(dest: str) -> int:
    version = importlib.metadata.version("llama_cpp_python")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", tmp],
                       check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        n = 0
        with tarfile.open(sdist) as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                # only regular files named ggml-vocab-* in the vendored models folder, by
                # their base name (no path from the archive is used)
                if member.isfile() and MEMBER_DIR in member.name and name.startswith(PREFIX):
                    data = tar.extractfile(member).read()
                    part = out / f".{name}.part"
                    part.write_bytes(data)
                    part.replace(out / name)
                    n += 1
    (out / "VERSION").write_text(f"llama-cpp-python {version}\n")
    print(f"{n} llama.cpp vocabulary files (llama-cpp-python {version}) in {out}")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
