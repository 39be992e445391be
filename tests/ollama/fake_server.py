"""A strict stand-in for the Ollama server (docs/api.md), on 127.0.0.1, for the tests.

A real Ollama cannot run on the test machine. This server implements the part of the documented
contract Tailor uses, and is stricter than needed where a mistake would pass silently:

- ``GET /api/version``, ``GET /api/tags``
- ``HEAD /api/blobs/sha256:<64 hex>`` (200/404), ``POST`` the same (the digest must match the
  regex; the upload is re-hashed: 400 on a mismatch, 201 created)
- ``POST /api/create``: the model name must be valid, every ``files``/``adapters`` digest must
  have been uploaded and be a GGUF, ``from`` must exist, ``quantize`` only from F16/F32/BF16,
  the Go template must parse (unbalanced ``{{ }}``/``{{ end }}`` -> 400); the reply is NDJSON
  status lines ending in ``{"status":"success"}``
- ``POST /api/show`` (template, parameters, modelfile, system, model_info), ``DELETE
  /api/delete``

Faults, set per endpoint with ``server.fault(endpoint, kind)``: ``hang`` (sleep until the test
ends), ``hang_mid_stream``, ``status:400|404|500``, ``digest_mismatch`` (a byte flipped on
arrival, so the re-hash fails), ``cut_short`` (the chunked stream stops without its final
chunk), ``no_success`` (the stream ends cleanly without success), ``error_mid_stream`` (an
``{"error": ...}`` line inside a 200 stream), ``stale`` (show answers with another template
and no stops), ``slow`` (uploads are read at about 5 MB/s), ``stall_after_first_line`` (a 200
and the first line of the answer, then silence until the test ends; for a blob upload, after the
body was read).
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME = re.compile(r"^(?:[a-zA-Z0-9_][a-zA-Z0-9_-]{0,79}/)?[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,79}"
                  r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,79})?$")
QUANTS = {"q4_K_M", "q4_K_S", "q8_0"}
FLOAT_FILE_TYPES = {0, 1, 32}


def full_name(name: str) -> str:
    name = name.lower()
    if name.startswith("library/"):
        name = name[len("library/"):]
    return name if ":" in name.split("/")[-1] else name + ":latest"


def _action_end(text: str, i: int) -> int:
    """Index of the '}}' closing the action opened before ``i``, skipping string literals;
    -1 when the action is not closed (or another '{{' comes first)."""
    quote = ""
    while i < len(text) - 1:
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"`":
            quote = c
        elif text.startswith("}}", i):
            return i
        elif text.startswith("{{", i):
            return -1
        i += 1
    return -1


def check_go_template(text: str) -> str | None:
    """An independent balance check of Go template actions; the error text or None."""
    depth: list[str] = []
    pos = 0
    while True:
        i = text.find("{{", pos)
        stray = text.find("}}", pos)
        if 0 <= stray and (i < 0 or stray < i):
            return f"template: unexpected \"}}}}\" at offset {stray}"
        if i < 0:
            break
        j = _action_end(text, i + 2)
        if j < 0:
            return f"template: unclosed action at offset {i}"
        inner = text[i + 2:j].strip().lstrip("-").rstrip("-").strip()
        word = inner.split()[0] if inner.split() else ""
        if word in ("if", "range", "with", "define", "block"):
            depth.append(word)
        elif word == "end":
            if not depth:
                return "template: unexpected {{end}}"
            depth.pop()
        elif word == "else":
            if not depth:
                return "template: unexpected {{else}}"
        pos = j + 2
    if depth:
        return f"template: unexpected EOF (unclosed {depth[-1]})"
    return None


def gguf_facts(data: bytes) -> dict:
    import gguf

    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        r = gguf.GGUFReader(f.name, "r")

        def val(key):
            fld = r.fields.get(key)
            return fld.contents() if fld is not None else None

        return {"architecture": val("general.architecture"), "file_type": val("general.file_type"),
                "type": val("general.type") or "model"}


class FakeOllama:
    """``with FakeOllama() as server: server.host ...``; see the module docstring."""

    def __init__(self, version: str = "0.6.8"):
        self.version = version
        self.blobs: dict[str, bytes] = {}
        self.models: dict[str, dict] = {}
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()  # set at shutdown: hung handlers return
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fault(self, endpoint: str, kind: str | None) -> None:
        """endpoint: version|tags|blob_head|blob_post|create|show|delete."""
        if kind is None:
            self.faults.pop(endpoint, None)
        else:
            self.faults[endpoint] = kind

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    def __enter__(self) -> "FakeOllama":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------------------------------

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            # -- helpers -------------------------------------------------------------------------
            def send_json(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def send_empty(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def read_body(self, slow: bool = False) -> bytes:
                if slow:  # a slow link: 256 KB every 50 ms, through a small receive buffer
                    import socket

                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
                    n, out = int(self.headers.get("Content-Length") or 0), b""
                    while len(out) < n:
                        out += self.rfile.read(min(1 << 18, n - len(out)))
                        time.sleep(0.05)
                    return out
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def read_json(self):
                try:
                    obj = json.loads(self.read_body() or b"null")
                except ValueError:
                    return None
                return obj if isinstance(obj, dict) else None

            def injected(self, endpoint: str) -> bool:
                """Apply a fault that replaces the whole answer; True if it answered."""
                kind = server.faults.get(endpoint, "")
                if kind == "hang":
                    server.release.wait(60)
                    self.close_connection = True
                    return True
                if kind.startswith("status:"):
                    code = int(kind.split(":")[1])
                    self.send_json(code, {"error": f"injected {code} for {endpoint}"})
                    return True
                if kind == "stall_after_first_line" and endpoint != "create":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if self.command != "HEAD":
                        line = b'{"status": "working"\n'  # the answer's first line, unfinished
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    server.release.wait(60)
                    self.close_connection = True
                    return True
                return False

            def chunk(self, obj) -> None:
                data = (json.dumps(obj) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            # -- routes --------------------------------------------------------------------------
            def do_GET(self):
                server.requests.append(("GET", self.path))
                if self.path == "/api/version":
                    if not self.injected("version"):
                        self.send_json(200, {"version": server.version})
                elif self.path == "/api/tags":
                    if not self.injected("tags"):
                        self.send_json(200, {"models": [
                            {"name": n, "model": n, "size": m["size"], "digest": m["digest"],
                             "details": {"format": "gguf", "family": m["arch"]}}
                            for n, m in server.models.items()]})
                else:
                    self.send_json(404, {"error": "404 page not found"})

            def do_HEAD(self):
                server.requests.append(("HEAD", self.path))
                m = re.fullmatch(r"/api/blobs/(.+)", self.path)
                if not m:
                    return self.send_empty(404)
                if self.injected("blob_head"):
                    return
                if not DIGEST.match(m.group(1)):
                    return self.send_empty(400)
                self.send_empty(200 if m.group(1) in server.blobs else 404)

            def do_POST(self):
                server.requests.append(("POST", self.path))
                m = re.fullmatch(r"/api/blobs/(.+)", self.path)
                if m:
                    return self.post_blob(m.group(1))
                if self.path == "/api/create":
                    return self.create()
                if self.path == "/api/show":
                    return self.show()
                self.read_body()
                self.send_json(404, {"error": "404 page not found"})

            def do_DELETE(self):
                server.requests.append(("DELETE", self.path))
                if self.path != "/api/delete":
                    return self.send_json(404, {"error": "404 page not found"})
                req = self.read_json()
                if self.injected("delete"):
                    return
                name = full_name((req or {}).get("model", ""))
                if name not in server.models:
                    return self.send_json(404, {"error": f"model '{name}' not found"})
                del server.models[name]
                self.send_json(200, {})

            def post_blob(self, digest: str) -> None:
                data = self.read_body(slow=server.faults.get("blob_post") == "slow")
                if self.injected("blob_post"):
                    return
                if not DIGEST.match(digest):
                    return self.send_json(400, {"error": "invalid digest format"})
                if server.faults.get("blob_post") == "digest_mismatch" and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                actual = "sha256:" + hashlib.sha256(data).hexdigest()
                if actual != digest:
                    return self.send_json(400, {"error": f"digest mismatch, expected {digest}, "
                                                         f"got {actual}"})
                with server.lock:
                    server.blobs[digest] = data
                self.send_empty(201)

            def create(self) -> None:
                req = self.read_json()
                if self.injected("create"):
                    return
                if req is None:
                    return self.send_json(400, {"error": "missing request body"})
                name = req.get("model") or ""
                if not NAME.match(name):
                    return self.send_json(400, {"error": "invalid model name"})
                files, adapters = req.get("files") or {}, req.get("adapters") or {}
                if not files and not req.get("from"):
                    return self.send_json(400, {"error": "neither 'from' or 'files' was specified"})
                arch, size, file_digest = "", 0, ""
                for fname, digest in [*files.items(), *adapters.items()]:
                    if "/" in fname or fname.startswith(".."):
                        return self.send_json(400, {"error": "file path must be relative"})
                    if not DIGEST.match(str(digest)):
                        return self.send_json(400, {"error": "invalid digest format"})
                    if digest not in server.blobs:
                        return self.send_json(400, {"error": f"blob {digest} not found; "
                                                             "push it first"})
                    if not server.blobs[digest].startswith(b"GGUF"):
                        return self.send_json(400, {"error": "supplied file was not in GGUF format"})
                if len(adapters) > 1:
                    return self.send_json(400, {"error": "only one adapter is currently supported"})
                facts = {}
                if files:
                    file_digest = next(iter(files.values()))
                    facts = gguf_facts(server.blobs[file_digest])
                    arch, size = facts["architecture"], len(server.blobs[file_digest])
                if req.get("from"):
                    base = server.models.get(full_name(req["from"]))
                    if base is None:
                        return self.send_json(400, {"error": f"model '{req['from']}' not found"})
                    arch, size, file_digest = base["arch"], base["size"], base["digest"]
                    # Like Ollama: layers not given in the request come from the base model.
                    req.setdefault("template", base["template"])
                    params = {**base["parameters"], **(req.get("parameters") or {})}
                    req["parameters"] = params
                q = req.get("quantize")
                if q:
                    if q not in QUANTS:
                        return self.send_json(400, {"error": f"unsupported quantization type {q}"})
                    if facts.get("file_type") not in FLOAT_FILE_TYPES:
                        return self.send_json(400, {"error": "quantization is only supported for "
                                                             "F16 and F32 models"})
                template = req.get("template")
                if template is not None:
                    err = check_go_template(template)
                    if err:
                        return self.send_json(400, {"error": f"template error: {err}"})
                params = req.get("parameters") or {}
                stop = params.get("stop", [])
                if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
                    return self.send_json(400, {"error": "stop must be a list of strings"})

                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                fault = server.faults.get("create", "")
                self.chunk({"status": "parsing GGUF"})
                if fault in ("hang_mid_stream", "stall_after_first_line"):
                    server.release.wait(60)
                    self.close_connection = True
                    return
                if fault == "cut_short":
                    self.chunk({"status": f"using existing layer {file_digest}"})
                    self.close_connection = True  # no final 0-chunk: the body is incomplete
                    return
                if fault == "error_mid_stream":
                    self.chunk({"status": f"using existing layer {file_digest}"})
                    self.chunk({"error": "unsupported architecture"})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if q:
                    self.chunk({"status": f"quantizing F16 model to {q}", "digest": "0",
                                "total": size, "completed": size // 2})
                    self.chunk({"status": f"quantizing F16 model to {q}", "digest": "0",
                                "total": size, "completed": size})
                self.chunk({"status": f"using existing layer {file_digest}"})
                self.chunk({"status": "writing manifest"})
                if fault != "no_success":
                    with server.lock:
                        server.models[full_name(name)] = {
                            "template": template or "{{ .Prompt }}", "system": req.get("system"),
                            "parameters": params, "arch": arch, "size": size,
                            "digest": file_digest, "adapters": adapters, "from": req.get("from"),
                            "quantize": q}
                    self.chunk({"status": "success"})
                self.wfile.write(b"0\r\n\r\n")

            def show(self) -> None:
                req = self.read_json()
                if self.injected("show"):
                    return
                name = full_name((req or {}).get("model", ""))
                m = server.models.get(name)
                if m is None:
                    return self.send_json(404, {"error": f"model '{name}' not found"})
                if server.faults.get("show") == "stale":  # as if an older model of that name
                    m = {**m, "template": "{{ .Prompt }}", "parameters": {}}
                plines = []
                for k, v in m["parameters"].items():
                    for item in (v if isinstance(v, list) else [v]):
                        plines.append(f"{k:<30} {json.dumps(item) if k == 'stop' else item}")
                modelfile = (f"FROM /blobs/{m['digest'].replace(':', '-')}\n"
                             f'TEMPLATE """{m["template"]}"""\n' +
                             "".join(f"PARAMETER {ln}\n" for ln in plines))
                self.send_json(200, {"template": m["template"], "system": m["system"] or "",
                                     "parameters": "\n".join(plines), "modelfile": modelfile,
                                     "details": {"format": "gguf", "family": m["arch"]},
                                     "model_info": {"general.architecture": m["arch"]}})

        return Handler


def free_port() -> int:
    """A port with nothing listening (for connection-refused tests)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


BASE_TEMPLATE = "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"


def add_base_model(server: FakeOllama, name: str, gguf_path: Path) -> None:
    """Register a model as if pulled (for --adapter-only tests)."""
    data = Path(gguf_path).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    server.blobs[digest] = data
    server.models[full_name(name)] = {"template": BASE_TEMPLATE, "system": None,
                                      "parameters": {"stop": ["<|im_end|>"]},
                                      "arch": gguf_facts(data)["architecture"],
                                      "size": len(data), "digest": digest, "adapters": {},
                                      "from": None, "quantize": None}
