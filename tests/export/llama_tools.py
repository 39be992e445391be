"""llama.cpp's own imatrix tooling compiled from the llama.cpp sources vendored in
llama-cpp-python's source distribution (``TAILOR_LLAMA_CPP_SDIST``), for the opt-in tests:
no CMake build of llama.cpp, just the tool's source files compiled with g++ against the
libllama / libggml that llama-cpp-python ships (the same version as the sources).

- ``common_imatrix_load`` (common/imatrix-loader.cpp) with a small driver that prints what
  it loaded: the loader llama-quantize and llama-imatrix --in-file use.
- ``llama-quantize`` itself (tools/quantize/quantize.cpp + main.cpp), with --imatrix.

The rest of llama.cpp's common library is replaced by stand-ins for the four helpers these
files call (a string split and suffix strip, the error log macro, the build-info banner);
none of them touches the matrix or the quantizer.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

SDIST = os.environ.get("TAILOR_LLAMA_CPP_SDIST", "")
AVAILABLE = bool(SDIST) and Path(SDIST).is_file() and shutil.which("g++") is not None
SKIP_REASON = "set TAILOR_LLAMA_CPP_SDIST to llama-cpp-python's sdist (needs g++)"

SHIM_COMMON = """#pragma once
#include "llama.h"
#include <string>
#include <string_view>
#include <vector>
template <class T> std::vector<T> string_split(const std::string & s, char delim) {
    std::vector<T> out;
    size_t start = 0, pos;
    while ((pos = s.find(delim, start)) != std::string::npos) {
        out.push_back(s.substr(start, pos - start));
        start = pos + 1;
    }
    out.push_back(s.substr(start));
    return out;
}
inline bool string_parse_kv_override(const char *, std::vector<llama_model_kv_override> &) {
    return false;
}
inline bool string_remove_suffix(std::string & s, std::string_view suffix) {
    if (s.size() < suffix.size() ||
        s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    s.resize(s.size() - suffix.size());
    return true;
}
"""
SHIM_LOG = "#pragma once\n#include <cstdio>\n#define LOG_ERR(...) fprintf(stderr, __VA_ARGS__)\n"
SHIM_BUILD_INFO = ("#pragma once\n#include <cstdio>\ninline void llama_print_build_info("
                   "const char * v, FILE * f = stderr) { fprintf(f, \"version: %s\\n\", v); }\n")
LOADER_DRIVER = r"""#include "imatrix-loader.h"
#include <cstdio>
int main(int argc, char ** argv) {
    common_imatrix m;
    if (argc < 2 || !common_imatrix_load(argv[1], m)) { printf("FAILED\n"); return 1; }
    printf("meta %d %d %d %d\n", (int) m.is_legacy, (int) m.has_metadata, m.chunk_count,
           m.chunk_size);
    for (const auto & d : m.datasets) printf("dataset %s\n", d.c_str());
    for (const auto & [name, e] : m.entries) {
        printf("entry %s %zu", name.c_str(), e.counts.size());
        for (auto c : e.counts) printf(" %lld", (long long) c);
        for (auto s : e.sums) printf(" %.9g", s);
        printf("\n");
    }
    return 0;
}
"""


def build(root: Path) -> dict[str, Path]:
    """Compile both tools under ``root`` -> {"load_imatrix": exe, "llama-quantize": exe}."""
    import llama_cpp

    with tarfile.open(SDIST) as tar:
        wanted = ("/vendor/llama.cpp/common/imatrix-loader.", "/vendor/llama.cpp/include/",
                  "/vendor/llama.cpp/ggml/include/", "/vendor/llama.cpp/tools/quantize/")
        members = [m for m in tar.getmembers() if any(w in m.name for w in wanted)]
        tar.extractall(root / "src", members=members, filter="data")
    vendor = next((root / "src").glob("*/vendor/llama.cpp"))
    b = root / "build"
    b.mkdir()
    for f in ("imatrix-loader.cpp", "imatrix-loader.h"):
        shutil.copy(vendor / "common" / f, b / f)
    shutil.copy(vendor / "tools" / "quantize" / "quantize.cpp", b / "quantize.cpp")
    shutil.copy(vendor / "tools" / "quantize" / "main.cpp", b / "quantize_main.cpp")
    (b / "common.h").write_text(SHIM_COMMON)
    (b / "log.h").write_text(SHIM_LOG)
    (b / "build-info.h").write_text(SHIM_BUILD_INFO)
    (b / "load_imatrix.cpp").write_text(LOADER_DRIVER)
    lib = Path(llama_cpp.__file__).parent / "lib"
    flags = ["-std=c++17", "-O1", f"-I{b}", f"-I{vendor / 'include'}",
             f"-I{vendor / 'ggml' / 'include'}"]
    libs = [f"-L{lib}", "-l:libllama.so", "-l:libggml-base.so", "-l:libggml.so",
            f"-Wl,-rpath,{lib}"]
    tools = {"load_imatrix": ["load_imatrix.cpp"],
             "llama-quantize": ["quantize.cpp", "quantize_main.cpp"]}
    out = {}
    for name, sources in tools.items():
        out[name] = b / name
        subprocess.run(["g++", *flags, str(b / "imatrix-loader.cpp"),
                        *(str(b / s) for s in sources), *libs, "-o", str(out[name])],
                       check=True)
    return out


_BUILT: dict[str, Path] = {}


def tools() -> dict[str, Path]:
    """``build`` once per test process (a temporary folder removed at exit)."""
    if not _BUILT:
        import atexit
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="tailor-llama-tools-"))
        atexit.register(shutil.rmtree, root, True)
        _BUILT.update(build(root))
    return _BUILT
