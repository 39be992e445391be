"""A stand-in for the Hugging Face Hub on 127.0.0.1: the parts of its HTTP API that
huggingface_hub calls to create a repo and upload a commit (HF_ENDPOINT points at it).

- POST /api/repos/create                          -> the repo (409 when it exists)
- POST /api/validate-yaml                         -> the README's front matter parses as YAML
- POST /api/models/{repo}/preupload/{rev}         -> each file's upload mode (lfs or regular)
- POST /{repo}.git/info/lfs/objects/batch         -> an upload action per object not stored yet
- PUT  /lfs-upload/{oid}                          -> the object's bytes (sha256 checked)
- POST /api/models/{repo}/commit/{rev}            -> the commit (NDJSON: header, file, lfsFile)

``fail_oid``: the sha256 of a file whose LFS upload is cut off after half its bytes (403, so
huggingface_hub does not retry it), as a dropped upload; the objects stored before it stay, as
on the Hub, so running the push again sends only what is missing. Every request is logged."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".gguf", ".png", ".bin")


class FakeHub:
    def __init__(self, token: str = "hf_test_token") -> None:
        self.token = token
        self.repos: dict[str, dict] = {}     # repo id -> {"private": bool, "files": {path: bytes}}
        self.objects: dict[str, bytes] = {}  # LFS oid -> bytes
        self.log: list[tuple[str, str]] = []
        self.commits: list[dict] = []
        self.validated: list[str] = []
        self.fail_oid: str | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def puts(self) -> list[str]:
        return [path for method, path in self.log if method == "PUT"]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    self.close_connection = True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return False
                return True

            def do_POST(self):  # noqa: N802
                with hub.lock:
                    hub.log.append(("POST", self.path))
                if not self._authorized():
                    self._body()
                    return
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    return self._create(json.loads(self._body()))
                if path == "/api/validate-yaml":
                    return self._validate(json.loads(self._body()))
                if path.endswith(".git/info/lfs/objects/batch"):
                    return self._batch(path[1:-len(".git/info/lfs/objects/batch")],
                                       json.loads(self._body()))
                if path.startswith("/api/models/") and "/preupload/" in path:
                    return self._preupload(json.loads(self._body()))
                if path.startswith("/api/models/") and "/commit/" in path:
                    repo = path[len("/api/models/"):path.index("/commit/")]
                    return self._commit(repo, self._body())
                self._body()
                self._reply(404, {"error": f"not implemented: POST {path}"})

            def _create(self, body: dict) -> None:
                repo = f"{body.get('organization')}/{body['name']}"
                with hub.lock:
                    if repo in hub.repos:
                        return self._reply(409, {"error": "You already created this model repo",
                                                 "url": f"{hub.url}/{repo}"})
                    hub.repos[repo] = {"private": body.get("visibility") == "private"
                                       or bool(body.get("private")), "files": {}}
                self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo, "id": repo})

            def _validate(self, body: dict) -> None:
                import yaml

                text = body.get("content", "")
                hub.validated.append(text)
                try:
                    if text.startswith("---\n"):
                        yaml.safe_load(text[4:text.index("\n---", 4)])
                except (yaml.YAMLError, ValueError) as e:
                    return self._reply(400, {"errors": [{"message": str(e)}]})
                self._reply(200, {"warnings": []})

            def _preupload(self, body: dict) -> None:
                files = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(
                    LFS_SUFFIXES) else "regular", "shouldIgnore": False}
                    for f in body.get("files", [])]
                self._reply(200, {"files": files, "commitOid": "0" * 40})

            def _batch(self, repo: str, body: dict) -> None:
                objects = []
                for o in body.get("objects", []):
                    entry = {"oid": o["oid"], "size": o["size"]}
                    with hub.lock:
                        stored = o["oid"] in hub.objects
                    if not stored:
                        entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}",
                                                       "header": {}}}
                    objects.append(entry)
                self._reply(200, {"transfer": "basic", "objects": objects})

            def do_PUT(self):  # noqa: N802
                with hub.lock:
                    hub.log.append(("PUT", self.path))
                oid = self.path.rsplit("/", 1)[-1]
                size = int(self.headers.get("Content-Length") or 0)
                if oid == hub.fail_oid:
                    self.rfile.read(size // 2)  # half of it arrives, then the link drops
                    self.close_connection = True
                    return self._reply(403, {"error": "upload interrupted"})
                data = self.rfile.read(size)
                if hashlib.sha256(data).hexdigest() != oid:
                    return self._reply(400, {"error": "sha256 mismatch"})
                with hub.lock:
                    hub.objects[oid] = data
                self._reply(200, {})

            def _commit(self, repo: str, body: bytes) -> None:
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                files, missing = {}, []
                for line in lines:
                    value = line["value"]
                    if line["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif line["key"] == "lfsFile":
                        with hub.lock:
                            data = hub.objects.get(value["oid"])
                        if data is None:
                            missing.append(value["path"])
                        else:
                            files[value["path"]] = data
                if repo not in hub.repos:
                    return self._reply(404, {"error": f"repository {repo} not found"})
                if missing:
                    return self._reply(422, {"error": f"LFS objects missing: {missing}"})
                with hub.lock:
                    hub.repos[repo]["files"].update(files)
                    hub.commits.append({"repo": repo, "header": lines[0]["value"],
                                        "files": sorted(files)})
                oid = hashlib.sha1(body).hexdigest()
                self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}",
                                  "commitOid": oid, "pullRequestUrl": None})

        return Handler
