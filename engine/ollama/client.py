"""A small client for Ollama's REST API (docs/api.md): version, tags, blobs, create, show, delete.

Plain ``httpx`` rather than the ``ollama`` package because we need what it does not give: a
streamed upload with progress and cancellation, the NDJSON create stream read to the end with
``error`` lines caught anywhere, and one clear message per failure (connection refused, a
server that hangs, 4xx/5xx, a digest mismatch, a stream cut short).

Every request runs in a helper thread while the calling thread waits on it in short slices, so
a ``CancelToken`` stops a hung request at once and our own deadline catches a silent server.
One ``timeout`` (the user's ``--timeout``) bounds the connect and every silence: an ordinary
answer, a stalled upload, and the gap between two lines of a create stream.
"""
from __future__ import annotations

import ipaddress
import json
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import httpx

from ..atomic import sha256_file
from ..events import CancelToken, Cancelled, ErrorCode, TailorError
from ..results import OllamaStatus

DEFAULT_HOST = "127.0.0.1:11434"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
QUANT_TYPES = {"q4_k_m": "q4_K_M", "q4_k_s": "q4_K_S", "q8_0": "q8_0"}
# general.file_type values Ollama can quantize from (F32, F16, BF16)
QUANTIZABLE_FILE_TYPES = {0: "F32", 1: "F16", 32: "BF16"}

ProgressFn = Callable[[float, float, str], None]
_START_HINT = ("start Ollama (open the Ollama app, or run `ollama serve`); without it, "
               "`tailor ollama` writes a Modelfile folder to import later")


class OllamaError(TailorError):
    """Ollama could not be reached, or refused or failed a request."""

    code = ErrorCode.OLLAMA


class OllamaNameTaken(OllamaError):
    """The model name is in use and replacing it was not asked for (the app then offers to)."""

    code = ErrorCode.NAME_TAKEN


class OllamaUnreachable(OllamaError):
    """No server answered at the host (connection refused, unknown host)."""

    code = ErrorCode.NOT_RUNNING


# ----------------------------------------------------------------------------------------------
# Host


def resolve_host(host: str | None = None, allow_remote: bool = False) -> str:
    """The base URL for ``host`` (else $OLLAMA_HOST, else 127.0.0.1:11434).

    A host off the loopback interface is refused unless ``allow_remote``: the model file would
    be sent over the network. ``0.0.0.0`` (how servers are told to listen everywhere) means
    this machine.
    """
    raw = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OllamaError(f"{host or raw!r} is not an Ollama address",
                          hint="use host:port or http://host:port, e.g. 127.0.0.1:11434")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 11434)
    except ValueError as e:
        raise OllamaError(f"{raw!r} has an invalid port: {e}") from e
    hostname = parts.hostname
    if hostname in ("0.0.0.0", "::"):
        hostname = "127.0.0.1"
    if not is_loopback(hostname) and not allow_remote:
        raise OllamaError(
            f"the Ollama host {hostname} is not on this machine; Tailor only sends models to a "
            "local Ollama unless you allow it",
            hint="pass --allow-remote to upload the model to that server")
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{netloc}:{port}{path}"


def is_loopback(hostname: str) -> bool:
    if hostname.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class CreateResult:
    model: str
    statuses: list[str]
    show: dict


_END = object()  # the create stream's reader thread: the stream ended normally


def _create_payload(model, files, adapters, from_model, template, system, parameters,
                    quantize) -> dict[str, Any]:
    """/api/create's JSON body (only what was given); every blob digest checked first."""
    payload: dict[str, Any] = {"model": model, "stream": True}
    for key, value in (("files", files), ("adapters", adapters), ("from", from_model),
                       ("template", template), ("system", system),
                       ("parameters", parameters), ("quantize", quantize)):
        if value or key == "template" and value is not None:  # an empty template is sent
            payload[key] = value
    for d in [*(files or {}).values(), *(adapters or {}).values()]:
        _check_digest(d)
    return payload


# ----------------------------------------------------------------------------------------------
# The client


class OllamaClient:
    """``OllamaClient(host=None, allow_remote=False)``; see the module docstring.

    ``timeout`` is the silence allowed anywhere: waiting for an answer, between the bytes of an
    upload, between two lines of a create stream (Ollama sends progress lines while it works);
    ``stream_timeout`` overrides it for the create stream only; ``connect_timeout`` caps the
    connect (never above ``timeout``); ``transport`` is an httpx transport for tests.
    """

    def __init__(self, host: str | None = None, *, allow_remote: bool = False,
                 timeout: float = 30.0, connect_timeout: float = 5.0,
                 stream_timeout: float | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = resolve_host(host, allow_remote)
        self.timeout = timeout
        self.stream_timeout = timeout if stream_timeout is None else stream_timeout
        self.connect_timeout = min(connect_timeout, timeout)
        # Proxies from the environment apply to a remote server, never to this machine.
        local = is_loopback(urlsplit(self.base_url).hostname or "")
        self._http = httpx.Client(
            base_url=self.base_url, transport=transport, trust_env=not local,
            timeout=self._timeouts(timeout))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "OllamaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _timeouts(self, idle: float) -> httpx.Timeout:
        """httpx's read/write/pool limits are per operation, so ``idle`` bounds each silence."""
        return httpx.Timeout(idle, connect=self.connect_timeout)

    def _in_thread(self, fn: Callable[[], Any], *, what: str, timeout: float,
                   cancel: CancelToken | None, on_cancel: Callable[[], None] | None = None,
                   last_activity: Callable[[], float] | None = None) -> Any:
        """Run ``fn`` in a helper thread; stop waiting on cancel or after ``timeout`` s without
        activity (``last_activity()`` -> monotonic time of the last progress, if given)."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the waiting thread
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=target, name=f"ollama-{what}", daemon=True).start()
        start = time.monotonic()
        while not done.wait(0.05):
            if cancel is not None and cancel.requested:
                if on_cancel:
                    on_cancel()
                raise Cancelled(f"stopped while {what}")
            since = max(start, last_activity()) if last_activity else start
            if time.monotonic() - since > timeout:
                if on_cancel:
                    on_cancel()
                raise self._hang(what, timeout)
        if "error" in box:
            raise self._translate(box["error"], what)
        return box.get("value")

    def _hang(self, what: str, timeout: float) -> OllamaError:
        return OllamaError(f"Ollama at {self.base_url} did not answer within {timeout:g} s while "
                           f"{what}", hint="check that Ollama is not stuck (restart the app or "
                                           "`ollama serve`) and try again; the GGUF file is kept")

    def _translate(self, e: BaseException, what: str) -> BaseException:
        if isinstance(e, (TailorError, Cancelled)):
            return e
        if isinstance(e, httpx.ConnectError):
            return OllamaUnreachable(f"could not connect to Ollama at {self.base_url} while "
                                     f"{what}: {_reason(e)}", hint=_START_HINT)
        if isinstance(e, httpx.TimeoutException):
            return self._hang(what, self.timeout)
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return OllamaError(f"the connection to Ollama at {self.base_url} broke while {what}: "
                               f"{_reason(e)}", hint="check that Ollama is still running and try "
                                                     "again; the GGUF file is kept")
        if isinstance(e, httpx.HTTPError):
            return OllamaError(f"talking to Ollama at {self.base_url} failed while {what}: "
                               f"{_reason(e)}")
        return e

    def _status_error(self, resp: httpx.Response, what: str) -> OllamaError:
        try:
            body = resp.read()
            detail = json.loads(body).get("error") or body.decode("utf-8", "replace")
        except Exception:
            detail = resp.reason_phrase
        detail = str(detail).strip()[:500]
        hints = {400: "Ollama refused the request as invalid",
                 404: "Ollama does not know this model or endpoint (is it an old Ollama? "
                      "Tailor needs 0.5 or later)",
                 500: "Ollama failed internally; its server log has details"}
        return OllamaError(f"Ollama answered {resp.status_code} while {what}: {detail}",
                           hint=hints.get(resp.status_code, "") + "; the GGUF file is kept")

    def _request(self, method: str, path: str, *, what: str, cancel: CancelToken | None = None,
                 ok: tuple[int, ...] = (200,), **kw) -> httpx.Response:
        def call() -> httpx.Response:
            resp = self._http.request(method, path, timeout=self._timeouts(self.timeout), **kw)
            if resp.status_code not in ok:
                raise self._status_error(resp, what)
            return resp

        return self._in_thread(call, what=what, timeout=self.timeout + 1, cancel=cancel)

    def _json(self, resp: httpx.Response, what: str) -> Any:
        try:
            return resp.json()
        except ValueError as e:
            raise OllamaError(f"Ollama sent something that is not JSON while {what}: "
                              f"{resp.text[:200]!r}",
                              hint="is another program listening on this port?") from e

    # -- status --------------------------------------------------------------------------------

    def version(self, cancel: CancelToken | None = None) -> str:
        what = "asking for its version"
        data = self._json(self._request("GET", "/api/version", what=what, cancel=cancel), what)
        if not isinstance(data, dict) or "version" not in data:
            raise OllamaError(f"{self.base_url}/api/version did not answer like Ollama: {data!r:.200}",
                              hint="is another program listening on this port?")
        return str(data["version"])

    def list_models(self, cancel: CancelToken | None = None) -> list[str]:
        what = "listing models"
        data = self._json(self._request("GET", "/api/tags", what=what, cancel=cancel), what)
        return [m.get("name") or m.get("model") for m in (data or {}).get("models", [])]

    def status(self, cancel: CancelToken | None = None) -> OllamaStatus:
        """Reachable? which version? which models? Never raises for an unreachable server."""
        try:
            version = self.version(cancel)
            models = self.list_models(cancel)
        except OllamaError as e:
            return OllamaStatus(self.base_url, False, error=e.message, hint=e.hint)
        return OllamaStatus(self.base_url, True, version=version, models=models)

    # -- blobs ---------------------------------------------------------------------------------

    def blob_exists(self, digest: str, cancel: CancelToken | None = None) -> bool:
        _check_digest(digest)
        resp = self._request("HEAD", f"/api/blobs/{digest}", what="checking for the model blob",
                             cancel=cancel, ok=(200, 404))
        return resp.status_code == 200

    def push_blob(self, path: Path | str, digest: str, *, progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> None:
        """Upload ``path`` as blob ``digest``; 201 is success, 400 a digest mismatch."""
        _check_digest(digest)
        path = Path(path)
        total = path.stat().st_size
        stop = threading.Event()
        activity = [time.monotonic()]

        def body() -> Iterator[bytes]:
            sent = 0
            with open(path, "rb") as f:
                while True:
                    if stop.is_set() or (cancel is not None and cancel.requested):
                        raise Cancelled(f"stopped while uploading {path.name}")
                    block = f.read(1 << 20)
                    if not block:
                        break
                    sent += len(block)
                    yield block
                    activity[0] = time.monotonic()
                    if progress:
                        progress(sent, total, f"uploading {path.name}")

        what = f"uploading {path.name}"

        def call() -> None:
            resp = self._http.post(f"/api/blobs/{digest}", content=body(),
                                   headers={"Content-Length": str(total)},
                                   timeout=self._timeouts(self.timeout))
            if resp.status_code == 400:
                detail = _error_text(resp)
                raise OllamaError(
                    f"Ollama rejected the upload of {path.name}: the file's sha256 does not match "
                    f"{digest} ({detail})",
                    hint="the file changed while it was being sent, or the transfer was "
                         "corrupted; try again (the GGUF file is kept)")
            if resp.status_code not in (200, 201):
                raise self._status_error(resp, what)

        # A slow link is fine as long as bytes move: the limit is on silence, not on the total.
        self._in_thread(call, what=what, timeout=self.timeout, cancel=cancel, on_cancel=stop.set,
                        last_activity=lambda: activity[0])

    def ensure_blob(self, path: Path | str, *, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None) -> tuple[str, bool]:
        """Hash ``path`` (streamed), HEAD the blob, upload if missing. -> (digest, uploaded)."""
        path = Path(path)

        def hash_progress(done: float, total: float) -> None:
            if cancel is not None:
                cancel.raise_if_cancelled()
            if progress:
                progress(done, total, f"hashing {path.name}")

        digest = "sha256:" + sha256_file(path, progress=hash_progress)
        if self.blob_exists(digest, cancel):
            return digest, False
        self.push_blob(path, digest, progress=progress, cancel=cancel)
        if not self.blob_exists(digest, cancel):
            raise OllamaError(f"Ollama accepted the upload of {path.name} but does not list blob "
                              f"{digest}", hint="try again; the GGUF file is kept")
        return digest, True

    # -- models --------------------------------------------------------------------------------

    def create(self, model: str, *, files: dict[str, str] | None = None,
               adapters: dict[str, str] | None = None, from_model: str | None = None,
               template: str | None = None, system: str | None = None,
               parameters: dict[str, Any] | None = None, quantize: str | None = None,
               progress: ProgressFn | None = None, cancel: CancelToken | None = None
               ) -> list[str]:
        """POST /api/create and read the NDJSON stream to its end.

        Returns the status lines; raises OllamaError unless the last line is ``success`` and no
        line carried an ``error``.
        """
        payload = _create_payload(model, files, adapters, from_model, template, system,
                                  parameters, quantize)
        what = f"creating {model}"
        lines, holder = self._stream_in_thread("/api/create", payload, what)
        statuses = self._read_create_stream(lines, holder, model, what, progress, cancel)
        if not statuses or statuses[-1] != "success":
            raise OllamaError(
                f"the create stream from Ollama ended before it reported success while {what} "
                f"(last status: {statuses[-1] if statuses else 'none'})",
                hint="Ollama may have been stopped; check `ollama list` and try again "
                     "(the GGUF file is kept)")
        return statuses

    def _stream_in_thread(self, path: str, payload: dict, what: str):
        """POST ``payload`` and read its NDJSON lines in a daemon thread -> (queue of lines,
        then _END or the exception that ended it; {"resp": the response} to close it)."""
        lines: queue.Queue = queue.Queue()
        holder: dict[str, httpx.Response] = {}

        def reader() -> None:
            try:
                with self._http.stream("POST", path, json=payload,
                                       timeout=self._timeouts(self.stream_timeout)) as resp:
                    holder["resp"] = resp
                    if resp.status_code != 200:
                        raise self._status_error(resp, what)
                    for line in resp.iter_lines():
                        if line.strip():
                            lines.put(line)
                lines.put(_END)
            except BaseException as e:
                lines.put(e)

        threading.Thread(target=reader, name="ollama-create", daemon=True).start()
        return lines, holder

    def _read_create_stream(self, lines: queue.Queue, holder: dict, model: str, what: str,
                            progress: ProgressFn | None, cancel: CancelToken | None
                            ) -> list[str]:
        """The create stream's status lines until it ends: a stop request, silence longer
        than stream_timeout, a cut stream or an ``error`` line raise (Cancelled/OllamaError)."""
        statuses: list[str] = []
        last = time.monotonic()
        while True:
            try:
                item = lines.get(timeout=0.05)
            except queue.Empty:
                if cancel is not None and cancel.requested:
                    _close(holder)
                    raise Cancelled(f"stopped while {what}; Ollama may finish on its own "
                                    f"(`ollama rm {model}` removes it)")
                if time.monotonic() - last > self.stream_timeout:
                    _close(holder)
                    raise self._hang(what, self.stream_timeout)
                continue
            last = time.monotonic()
            if item is _END:
                return statuses
            if isinstance(item, BaseException):
                if isinstance(item, httpx.ReadTimeout):
                    raise self._hang(what, self.stream_timeout)
                if isinstance(item, (httpx.RemoteProtocolError, httpx.ReadError)):
                    raise OllamaError(
                        f"the create stream from Ollama was cut short while {what} (last status: "
                        f"{statuses[-1] if statuses else 'none'}): {_reason(item)}",
                        hint="Ollama may have crashed or been stopped; check it and try again "
                             "(the GGUF file is kept)")
                raise self._translate(item, what)
            try:
                obj = json.loads(item)
            except ValueError:
                raise OllamaError(f"Ollama sent a line that is not JSON while {what}: {item[:200]!r}")
            if not isinstance(obj, dict):
                raise OllamaError(f"Ollama sent an unexpected line while {what}: {item[:200]!r}")
            if obj.get("error"):
                _close(holder)
                raise OllamaError(f"Ollama reported an error while {what}: {obj['error']}",
                                  hint="nothing was created; the GGUF file is kept")
            status = str(obj.get("status", ""))
            statuses.append(status)
            if progress:
                total, done = obj.get("total") or 0, obj.get("completed") or 0
                progress(done, total, status)

    def show(self, model: str, cancel: CancelToken | None = None) -> dict:
        what = f"checking {model}"
        resp = self._request("POST", "/api/show", json={"model": model}, what=what, cancel=cancel,
                             ok=(200, 404))
        if resp.status_code == 404:
            raise OllamaError(f"Ollama does not list {model} after creating it",
                              hint="check `ollama list`; the GGUF file is kept")
        return self._json(resp, what)

    def delete(self, model: str, cancel: CancelToken | None = None) -> None:
        self._request("DELETE", "/api/delete", json={"model": model},
                      what=f"deleting {model}", cancel=cancel)


# ----------------------------------------------------------------------------------------------


def normalize_quant(quant: str | None) -> str | None:
    """'q4_k_m' -> 'q4_K_M' (Ollama's spelling); None stays None; unknown raises TailorError."""
    if not quant:
        return None
    q = QUANT_TYPES.get(quant.lower())
    if not q:
        raise TailorError(f"Ollama cannot quantize to {quant!r}",
                          hint=f"choose one of {', '.join(QUANT_TYPES.values())}")
    return q


def _check_digest(digest: str) -> None:
    if not DIGEST_RE.match(digest or ""):
        raise OllamaError(f"{digest!r} is not a sha256 digest (sha256:<64 hex>)")


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "refused" in text.lower() or "Errno 111" in text or "Errno 61" in text:
        return "connection refused (nothing is listening there)"
    return text


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(json.loads(resp.read()).get("error", "")) or resp.reason_phrase
    except Exception:
        return resp.reason_phrase


def _close(holder: dict) -> None:
    resp = holder.get("resp")
    if resp is not None:
        try:
            resp.close()
        except Exception:
            pass
