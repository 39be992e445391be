"""`tailor generate`: try a base model or a library adapter with a prompt, streamed.

The prompt goes through the model's chat template (as the adapter was trained), tokens are
printed as they come and reported as ``progress`` events with stage ``generate``.

``--serve`` keeps the model loaded and answers requests read from stdin, one JSON object a
line, each reply streamed as ``reply`` events and ended by one ``reply.finished`` (or
``reply.failed``) naming the request's id::

    {"id": "1", "prompt": "Hi", "system": "Be brief.", "temperature": 0, "max_tokens": 64,
     "adapter": "my-adapter"}        # or "messages": [{"role": "user", "content": "Hi"}, ...]
    {"cancel": "1"}                   # stop that reply (what was written stays)
    quit                              # or end of input: answer what is queued, then exit

``adapter``: null/false/"off" for the base alone, true/"on" for the --adapter the worker
started with, or a library adapter's name (trained on the same base). Adapters are switched in
and out without reloading the base. Events always go to stdout (no ``--events``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .events import (Cancelled, CancelToken, ErrorCode, Finished, Job, JsonLinesReporter,
                     Progress, Reply, ReplyFailed, ReplyFinished, Reporter, TailorError,
                     fan_out, null_reporter)
from .results import GenerateReply, GenerateResult, GenerateServed


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model folder or Hugging Face repo id")
    src.add_argument("--adapter", help="an adapter in the library (its base model is used)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="the user message")
    what.add_argument("--serve", action="store_true",
                      help='keep the model loaded and answer requests read from stdin, one JSON '
                           'object a line: {"id", "prompt" or "messages", "system", '
                           '"temperature", "max_tokens", "adapter": a name, true or false}; '
                           '{"cancel": ID} stops that reply; "quit" or the end of input ends. '
                           'Events go to stdout (no --events); the options below are the '
                           'requests\' defaults')
    p.add_argument("--system", default=None, help="an optional system message")
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--raw", action="store_true", help="send the prompt without the chat template")


def _check_max_tokens(max_tokens: object) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or \
            max_tokens < 1 or max_tokens > 1_000_000:
        raise TailorError(f"--max-tokens must be between 1 and 1000000, not {max_tokens}")
    return max_tokens


def _load_base(model_or_folder: str | None, adapter: str | None, report: Reporter,
               cancel: CancelToken | None, job: str):
    """(model, tokenizer, folder, the adapter's AdapterInfo or None, quantize bits or None):
    the base model loaded, as ``adapter`` (when given) was trained on it."""
    from . import library
    from .models import load_model, resolve_model
    from .models.folder_files import model_files
    from .models.tokenizer import refuse_custom_code

    info = None
    if adapter:
        info = library.get_adapter(adapter)
        if not info.weights.exists():
            raise TailorError(f"adapter {adapter!r} has no weights yet (status {info.status})")
        model_or_folder = info.base_model or (info.manifest.get("base_model") or {}).get("given")
    folder = resolve_model(str(model_or_folder), report=report, cancel=cancel, job=job)
    model_files(folder).report_skipped(report, job)  # linked out of the folder: not read
    quant = _quantize_base(info)
    refuse_custom_code(folder)  # said before the weights load
    model, tokenizer, _ = load_model(folder, quant)
    return model, tokenizer, folder, info, quant


def _quantize_base(info) -> int | None:
    return (info.manifest.get("settings") or {}).get("quantize_base") if info else None


def _prompt_ids(tokenizer, messages: list[dict], raw: bool, max_tokens: int) -> list[int]:
    """The token ids of ``messages`` rendered for generation (the last user turn's text alone
    with ``raw`` or a model without a chat template)."""
    from .data.render import Renderer

    # Tailor's bounded renderer, as in training (not transformers' apply_chat_template, whose
    # sandbox has no time or size limit): a template bomb or violation is a named error.
    renderer = None if raw else Renderer(tokenizer, max_tokens=max_tokens)
    if renderer is None or not renderer.template_source:
        text = messages[-1]["content"]
    else:
        text = renderer.render_prompt(messages)
    return tokenizer.encode(text, add_special_tokens=False)


def _chat(prompt: str, system: str | None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + \
           [{"role": "user", "content": prompt}]


def generate_text(model_or_folder: str | None, adapter: str | None, prompt: str, *,
                  system: str | None = None, max_tokens: int = 256, temperature: float = 0.0,
                  raw: bool = False, on_text=None, report: Reporter = null_reporter,
                  cancel: CancelToken | None = None, job: str = "generate") -> str:
    """The generated text; ``on_text(piece)`` is called for every streamed piece."""
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.tuner.utils import load_adapters

    _check_max_tokens(max_tokens)
    model, tokenizer, _folder, info, _quant = _load_base(model_or_folder, adapter, report,
                                                         cancel, job)
    if info is not None:
        from .models.safetensors_check import check_adapter_file

        check_adapter_file(info.weights)  # named, not MLX's RuntimeError
        load_adapters(model, str(info.path))
    model.eval()
    ids = _prompt_ids(tokenizer, _chat(prompt, system), raw, max_tokens)
    pieces = []
    n = 0
    for r in mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=max_tokens,
                                    sampler=make_sampler(temp=temperature)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        pieces.append(r.text)
        n += 1
        if on_text:
            on_text(r.text)
        report(Progress(job=job, stage="generate", done=n, total=max_tokens, message=r.text))
    return "".join(pieces)


def run(args: argparse.Namespace, job) -> int:
    if args.serve:
        return run_serve(args, job)
    out = sys.stdout if args.events != "-" else sys.stderr

    def show(piece: str) -> None:
        out.write(piece)
        out.flush()

    text = generate_text(args.model, args.adapter, args.prompt, system=args.system,
                         max_tokens=args.max_tokens, temperature=args.temperature, raw=args.raw,
                         on_text=show, report=job.report if args.events else (lambda e: None),
                         cancel=job.cancel, job=job.name)
    out.write("\n")
    job.report(Finished(job=job.name, result=GenerateResult(text=text)))
    return 0


# ----------------------------------------------------------------------------------------------
# Adapters switched in and out of one loaded base


@dataclass
class _Swap:
    """What switching one adapter in and out replaces: modules (LoRA, DoRA: their layers wrap
    the base's own) or weights (a full fine-tune), as (path, object) pairs."""

    on: list = field(default_factory=list)
    off: list = field(default_factory=list)
    weights: bool = False
    stamp: tuple = ()  # the adapter's files as loaded (a resumed run rewrites them)


class AdapterSwitch:
    """The adapters of one loaded base, switched without reloading it.

    An adapter's layers are put in place of the base layers they wrap and taken out again
    (never a LoRA scale of 0: a DoRA layer's magnitude would still apply), so the base alone
    computes exactly what it computed before any adapter was loaded."""

    def __init__(self, model, folder: Path, quantize_base: int | None, own: str | None = None):
        self.model = model
        self.folder = Path(folder).resolve()
        self.quantize_base = quantize_base or None
        self.own = own  # the adapter the base was loaded for: it fits by construction
        self.loaded: dict[str, _Swap] = {}
        self.active: str | None = None

    def use(self, name: str | None) -> None:
        """Make ``name`` (an adapter in the library; None: the base alone) the active one."""
        if name == self.active:
            return
        self._off()
        if name is not None:
            swap = self.loaded.get(name)
            if swap is not None and swap.stamp == _stamp(name):
                self._put(swap.on, swap.weights)
            else:  # new, or trained further since: (re)loaded, which leaves it in place
                self.loaded.pop(name, None)
                self.loaded[name] = self._load(name)
            self.active = name
        self.model.eval()

    def _off(self) -> None:
        if self.active is not None:
            swap = self.loaded[self.active]
            self._put(swap.off, swap.weights)
            self.active = None

    def _put(self, pairs: list, weights: bool) -> None:
        from mlx.utils import tree_unflatten

        if weights:
            self.model.load_weights(pairs, strict=False)
        elif pairs:
            self.model.update_modules(tree_unflatten(pairs))

    def _check_fits(self, name: str):
        from . import library

        info = library.get_adapter(name)
        if not info.weights.exists():
            raise TailorError(f"adapter {name!r} has no weights yet (status {info.status})",
                              hint="wait until it has saved a checkpoint, or choose another")
        if name == self.own:
            return info
        base = info.base_model
        if not base or Path(base).resolve() != self.folder:
            raise TailorError(f"adapter {name!r} was trained on {base or 'an unrecorded base'}, "
                              f"not on the loaded model {self.folder}",
                              hint="start a worker for it (tailor generate --serve --adapter "
                                   f"{name})")
        if (_quantize_base(info) or None) != self.quantize_base:
            raise TailorError(f"adapter {name!r} was trained on the base quantized to "
                              f"{_quantize_base(info) or 'full precision'}, and the loaded base "
                              f"is {self.quantize_base or 'full precision'}",
                              hint="start a worker for it (tailor generate --serve --adapter "
                                   f"{name})")
        return info

    def _load(self, name: str) -> _Swap:
        import mlx.core as mx
        from mlx.utils import tree_flatten
        from mlx_lm.tuner.utils import load_adapters

        from .models.safetensors_check import check_adapter_file

        stamp = _stamp(name)
        info = self._check_fits(name)
        check_adapter_file(info.weights)  # named, not MLX's RuntimeError
        config = _adapter_config(info.path)
        if config.get("fine_tune_type") == "full":
            names = set(mx.load(str(info.weights)))
            before = [(k, v) for k, v in tree_flatten(self.model.parameters()) if k in names]
            _load_adapter(load_adapters, self.model, info.path,
                          undo=lambda: self._put(before, True))
            after = dict(tree_flatten(self.model.parameters()))
            return _Swap(on=[(k, after[k]) for k, _ in before], off=before, weights=True,
                         stamp=stamp)
        before = dict(self.model.named_modules())

        def changed() -> tuple[list, list]:
            now = dict(self.model.named_modules())
            paths = [p for p, m in before.items() if p in now and now[p] is not m]
            return [(p, now[p]) for p in paths], [(p, before[p]) for p in paths]

        _load_adapter(load_adapters, self.model, info.path,
                      undo=lambda: self._put(changed()[1], False))
        on, off = changed()
        return _Swap(on=on, off=off, stamp=stamp)


def _stamp(name: str) -> tuple:
    """When and how big the adapter's weights and configuration are (() when unreadable)."""
    from . import library

    try:
        folder = library.adapter_path(name)
        return tuple((s.st_mtime_ns, s.st_size) for s in
                     (os.stat(folder / "adapters.safetensors"),
                      os.stat(folder / "adapter_config.json")))
    except (OSError, TailorError):
        return ()


def _adapter_config(folder: Path) -> dict:
    f = folder / "adapter_config.json"
    try:
        config = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TailorError(f"{f}: unreadable adapter configuration ({e})",
                          hint="train the adapter again, or choose another") from None
    if not isinstance(config, dict):
        raise TailorError(f"{f}: the adapter configuration is not a JSON object")
    return config


def _load_adapter(load_adapters, model, folder: Path, undo) -> None:
    """mlx-lm's ``load_adapters``; a failure puts the base back (``undo``) and is named."""
    try:
        load_adapters(model, str(folder))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        undo()
        first = (str(e).strip().splitlines() or [""])[0]
        raise TailorError(f"the adapter in {folder} does not fit the loaded model: {first}",
                          hint="it was trained on another base or is damaged; train it "
                               "again") from None


# ----------------------------------------------------------------------------------------------
# The request loop


REQUEST_KEYS = {"id", "prompt", "messages", "system", "temperature", "max_tokens", "adapter",
                "raw"}
ROLES = {"system", "user", "assistant"}
REQUEST_HINT = ('one JSON object a line, e.g. {"id": "1", "prompt": "Hi", "max_tokens": 64, '
                '"adapter": null}')


@dataclass
class ServeRequest:
    """One request read from stdin, checked."""

    id: str
    messages: list[dict]
    adapter: str | None
    max_tokens: int
    temperature: float
    raw: bool


@dataclass
class ServeDefaults:
    """What a request leaves out: the command line's options."""

    adapter: str | None = None
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    raw: bool = False


def parse_request(obj: object, line: int, defaults: ServeDefaults) -> ServeRequest:
    """``obj`` (one decoded stdin line) as a ServeRequest; TailorError says what is wrong."""
    where = f"request on line {line}"
    if not isinstance(obj, dict):
        raise TailorError(f"{where} is not a JSON object",
                          hint=REQUEST_HINT)
    unknown = sorted(set(obj) - REQUEST_KEYS)
    if unknown:
        raise TailorError(f"{where} has unknown keys: {', '.join(unknown)}",
                          hint="known keys: " + ", ".join(sorted(REQUEST_KEYS | {'cancel'})))
    rid = _request_id(obj, line)
    system = obj.get("system", defaults.system)
    if system is not None and not isinstance(system, str):
        raise TailorError(f"{where}: \"system\" must be text", hint=REQUEST_HINT)
    messages = _messages(obj, where, system or None)
    max_tokens = obj.get("max_tokens", defaults.max_tokens)
    try:
        _check_max_tokens(max_tokens)
    except TailorError:
        raise TailorError(f"{where}: \"max_tokens\" must be a whole number from 1 to "
                          f"1000000, not {max_tokens!r}", hint=REQUEST_HINT) from None
    temperature = obj.get("temperature", defaults.temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not math.isfinite(temperature) or temperature < 0:
        raise TailorError(f"{where}: \"temperature\" must be a number of 0 or more, not "
                          f"{temperature!r}", hint="0 is greedy (the same answer every time)")
    raw = obj.get("raw", defaults.raw)
    if not isinstance(raw, bool):
        raise TailorError(f"{where}: \"raw\" must be true or false", hint=REQUEST_HINT)
    return ServeRequest(rid, messages, _adapter_of(obj, where, defaults), max_tokens,
                        float(temperature), raw)


def _request_id(obj: dict, line: int) -> str:
    rid = obj.get("id", str(line))
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise TailorError(f"request on line {line}: \"id\" must be text or a number",
                          hint=REQUEST_HINT)
    return str(rid)


def _messages(obj: dict, where: str, system: str | None) -> list[dict]:
    if ("prompt" in obj) == ("messages" in obj):
        raise TailorError(f"{where} needs \"prompt\" or \"messages\" (one of the two)",
                          hint=REQUEST_HINT)
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise TailorError(f"{where}: \"prompt\" must be non-empty text", hint=REQUEST_HINT)
        return _chat(obj["prompt"], system)
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in msgs):
        raise TailorError(f"{where}: \"messages\" must be a non-empty list of "
                          "{\"role\": system|user|assistant, \"content\": text}",
                          hint='e.g. [{"role": "user", "content": "Hi"}]')
    if system and msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": system}, *msgs]
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _adapter_of(obj: dict, where: str, defaults: ServeDefaults) -> str | None:
    value = obj.get("adapter", defaults.adapter)
    if value in (None, False, "", "off"):
        return None
    if value in (True, "on"):
        if not defaults.adapter:
            raise TailorError(f"{where} asks for the adapter, and this worker was started "
                              "without --adapter", hint="name the adapter in \"adapter\"")
        return defaults.adapter
    if not isinstance(value, str):
        raise TailorError(f"{where}: \"adapter\" must be an adapter's name, true or false",
                          hint="null or false: the base model alone")
    return value


class Inbox:
    """The requests, read from ``stream`` by a thread of its own so that a cancel reaches the
    reply being written. Yields (line number, decoded object or the JSON error) in order."""

    def __init__(self, stream):
        self.items: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.current: tuple[str, CancelToken] | None = None
        self.cancelled: set[str] = set()
        self.stopping = False
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True,
                                       name="tailor-serve-requests")
        self.thread.start()

    def _read(self, stream) -> None:
        try:
            for number, line in enumerate(stream, 1):
                text = line.strip()
                if not text:
                    continue
                if text.lower() in ("quit", "exit"):
                    break
                if text.lower() == "stop":  # the app's stop: end every reply, then exit
                    self.stop()
                    break
                try:
                    obj = json.loads(text)
                except ValueError as e:
                    self.items.put((number, e))
                    continue
                if isinstance(obj, dict) and set(obj) == {"cancel"}:
                    self.cancel(str(obj["cancel"]))
                else:
                    self.items.put((number, obj))
        except (OSError, ValueError):
            pass  # stdin closed under us: as the end of input
        self.items.put(None)

    def cancel(self, request_id: str) -> None:
        with self.lock:
            if self.current and self.current[0] == request_id:
                self.current[1].cancel("stopped")
            else:
                self.cancelled.add(request_id)  # queued (or already answered: harmless)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            if self.current:
                self.current[1].cancel("stopped")

    def begin(self, request_id: str) -> CancelToken:
        token = CancelToken()
        with self.lock:
            if self.stopping or request_id in self.cancelled:
                self.cancelled.discard(request_id)
                token.cancel("stopped")
            self.current = (request_id, token)
        return token

    def end(self) -> None:
        with self.lock:
            self.current = None

    def next(self, job_cancel: CancelToken):
        """The next item; None at the end of input. Polls ``job_cancel`` (Ctrl-C) meanwhile."""
        while True:
            if job_cancel.requested:
                self.stop()
            try:
                return self.items.get(timeout=0.2)
            except queue.Empty:
                if self.stopping:  # (stopped by Ctrl-C: stdin may stay open)
                    return None


class Server:
    """One loaded base (and its adapters) answering requests."""

    def __init__(self, model, tokenizer, switch: AdapterSwitch, job: Job,
                 defaults: ServeDefaults):
        self.model, self.tokenizer, self.switch = model, tokenizer, switch
        self.job, self.defaults = job, defaults
        self.answered = 0

    def serve(self, inbox: Inbox) -> None:
        """Answer every request until the end of input; raises Cancelled after a stop."""
        while (item := inbox.next(self.job.cancel)) is not None:
            number, obj = item
            try:
                if isinstance(obj, ValueError):
                    raise TailorError(f"line {number} is not JSON ({obj})", hint=REQUEST_HINT)
                request = parse_request(obj, number, self.defaults)
            except TailorError as e:
                rid = obj.get("id") if isinstance(obj, dict) else None
                self._failed(str(rid) if isinstance(rid, (str, int)) else "", e)
                continue
            self.answer(request, inbox.begin(request.id))
            inbox.end()
        if inbox.stopping:
            raise Cancelled("stopped")

    def answer(self, request: ServeRequest, cancel: CancelToken) -> None:
        """Stream one reply; every request ends in one ReplyFinished or ReplyFailed."""
        start = time.monotonic()
        reply = GenerateReply(request=request.id, adapter=request.adapter or "")
        try:
            cancel.raise_if_cancelled()
            self.switch.use(request.adapter)
            ids = _prompt_ids(self.tokenizer, request.messages, request.raw, request.max_tokens)
            self._stream(request, ids, reply, cancel, start)
        except Cancelled:
            reply.stopped = True
        except TailorError as e:
            return self._failed(request.id, e)
        except MemoryError:
            return self._failed(request.id, TailorError(
                "out of memory", hint="use a shorter reply or a smaller model",
                code=ErrorCode.OUT_OF_MEMORY))
        except Exception as e:  # noqa: BLE001 - one bad request never ends the worker
            return self._failed(request.id, _internal(e, self.job.name))
        reply.seconds = round(time.monotonic() - start, 4)
        self.answered += 1
        self.job.report(ReplyFinished(job=self.job.name, request=request.id, result=reply))

    def _stream(self, request: ServeRequest, ids: list[int], reply: GenerateReply,
                cancel: CancelToken, start: float) -> None:
        import mlx_lm
        from mlx_lm.sample_utils import make_sampler

        pieces: list[str] = []
        try:
            for r in mlx_lm.stream_generate(self.model, self.tokenizer, ids,
                                            max_tokens=request.max_tokens,
                                            sampler=make_sampler(temp=request.temperature)):
                cancel.raise_if_cancelled()
                self.job.cancel.raise_if_cancelled()  # Ctrl-C
                if reply.first_token_seconds is None:
                    reply.first_token_seconds = round(time.monotonic() - start, 4)
                reply.tokens += 1
                pieces.append(r.text)
                if r.text:
                    self.job.report(Reply(job=self.job.name, request=request.id, text=r.text,
                                          tokens=reply.tokens))
        finally:
            reply.text = "".join(pieces)

    def _failed(self, request_id: str, e: TailorError) -> None:
        self.job.report(ReplyFailed(job=self.job.name, request=request_id, message=e.message,
                                    hint=e.hint, code=e.code))


def _internal(exc: BaseException, job_name: str) -> TailorError:
    """An unexpected failure of one request: a one-line message, the traceback in a log."""
    import traceback

    from . import paths

    first = (str(exc).strip().splitlines() or [""])[0]
    try:
        folder = paths.tailor_home() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"internal-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        log.write_text(f"job: {job_name} (a served request)\n\n"
                       + "".join(traceback.format_exception(exc)), encoding="utf-8")
        hint = f"this is a bug in Tailor; please report it with the log {log}"
    except OSError as e:
        hint = f"this is a bug in Tailor; please report it (the log could not be saved: {e})"
    return TailorError(f"internal error: {type(exc).__name__}: {first[:300]}".rstrip(": "),
                       hint=hint, code=ErrorCode.INTERNAL)


def run_serve(args: argparse.Namespace, job: Job, stdin=None) -> int:
    """`tailor generate --serve`: load once, answer requests until the end of input."""
    import io

    if args.events:
        # The runner's --events - also watches stdin for `stop`, which would take the requests.
        raise TailorError("--serve writes its events to stdout and reads requests from stdin: "
                          "leave out --events", hint="tailor generate --serve --model M")
    # The runner reports a failure to load (and a stop) through job.report: on stdout too.
    job.report = fan_out(JsonLinesReporter(sys.stdout), job.report)
    defaults = ServeDefaults(adapter=args.adapter, system=args.system,
                             max_tokens=_check_max_tokens(args.max_tokens),
                             temperature=args.temperature, raw=args.raw)
    # Read from the start: requests sent while the model loads wait their turn, and a stop
    # is seen as soon as it is loaded.
    inbox = Inbox(stdin or io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8",
                                            errors="replace"))
    start = time.monotonic()
    model, tokenizer, folder, info, quant = _load_base(args.model, args.adapter, job.report,
                                                       job.cancel, job.name)
    switch = AdapterSwitch(model, folder, quant, own=info.name if info else None)
    if info is not None:
        switch.use(info.name)  # loaded now: the first reply with it does not wait
    switch.use(None)
    load_seconds = round(time.monotonic() - start, 3)
    job.started({"model": str(folder), "adapter": args.adapter or "", "serve": True},
                {"load_seconds": load_seconds})
    server = Server(model, tokenizer, switch, job, defaults)
    server.serve(inbox)
    job.report(Finished(job=job.name, result=GenerateServed(
        model=str(folder), requests=server.answered, load_seconds=load_seconds)))
    return 0
