"""The one place Tailor renders a chat template: Jinja in an immutable sandbox (as transformers
renders it), bounded in time and in size, so a broken or hostile template ends in a message
naming it instead of a hang or an out-of-memory kill.

A chat template comes with the model folder: it is code we did not write. The sandbox already
stops it reaching Python internals; it does not stop ``{% for a in range(100000) %}{% for b in
range(100000) %}`` (hours) or ``'x' * 10**10`` (10 GB in one allocation). So every step a
template takes passes a check on one per-render budget (``_Budget``):

- work: the render's CPU time (``RENDER_CPU_SECONDS``), checked on every call, attribute and
  item lookup, operator, filter, output piece and loop iteration (each ``for`` loop's iterable
  is wrapped by the code generator, so an empty loop body is counted too);
- size: no single value, and not the output, may exceed ``output_cap`` characters, and the
  characters a render creates in all (concatenations, filter and call results, captured
  blocks) are capped at ``WORK_PER_OUTPUT`` times that. Operations whose result can be far
  larger than their inputs (``*``, ``**``, ``+``, ``%``, ``~``, ``join``, ``replace``,
  ``center``, ``indent``, ``format``, ``tojson(indent)``...) are checked *before* they run,
  since Python cannot interrupt one huge allocation;
- depth: Python's recursion limit (a macro calling itself).

Exceeding any of them raises ``TemplateLimitError`` (a TailorError) naming the template's
source and the limit. Other template errors (a sandbox violation, ``raise_exception``, a
missing variable) pass through unchanged: the caller decides what they mean.
"""
from __future__ import annotations

import contextvars
import functools
import json
import re
import time
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any, Callable

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..events import ErrorCode, TailorError

# A chat template renders one conversation in about a millisecond (the tiny models' ChatML,
# Llama 3 and Gemma templates: 0.1-0.5 ms; a tools template a few ms). Two seconds of CPU is
# a loop that runs away, never real work, and still lets `data check` name the template
# quickly. CPU time of the rendering thread, so a busy machine does not fail a slow template.
RENDER_CPU_SECONDS = 2.0
# The output of one render, and any single value in it: at least this many characters
# (4 Mi: 1,000 times a long conversation), more for a long example (below).
OUTPUT_FLOOR_CHARS = 4 << 20
# A template writes each message once plus markup; four times the input's characters leaves
# room for templates that repeat a system prompt or the tool list.
OUTPUT_PER_INPUT_CHAR = 4
# Characters a render may create in all (copies, filter results, captured blocks, partial
# strings) per character of its output cap: bounds its memory, whatever it keeps alive.
WORK_PER_OUTPUT = 8
# Integers past this many bits are no chat template's business; `10**10**10` would take
# minutes and gigabytes to compute.
MAX_INT_BITS = 4096
# Each element of a list or dict counts at least this much when sizing (str() adds separators
# and quotes), so a huge list of small items is caught as well as a list of huge ones.
_ELEMENT_CHARS = 4


class TemplateLimitError(TailorError):
    """A chat template hit a resource limit (time, size or recursion)."""

    code = ErrorCode.LIMIT


class TemplateRaised(jinja2.exceptions.TemplateError):
    """The template called ``raise_exception(message)`` (it refuses this conversation)."""


class _LimitHit(Exception):
    """Raised inside a render; ``ChatTemplate.render`` turns it into TemplateLimitError."""


class _Budget:
    """What one render may still spend; lives in a context variable for the sandbox hooks."""

    __slots__ = ("cap", "work_cap", "seconds", "deadline", "ops", "made")

    def __init__(self, cap: int, seconds: float | None):
        self.cap = cap
        self.work_cap = cap * WORK_PER_OUTPUT
        self.seconds = seconds
        self.deadline: float | None = None  # set at the first look at the clock
        self.ops = 0
        self.made = 0

    def tick(self) -> None:
        self.ops += 1
        # A thread-CPU clock read costs about a microsecond: look every 64 steps (most
        # renders take fewer and never read it; the first 64 steps are free time).
        if self.ops & 63 or self.seconds is None:
            return
        now = time.thread_time()
        if self.deadline is None:
            self.deadline = now + self.seconds
        elif now > self.deadline:
            raise _LimitHit(f"it ran for more than {self.seconds:g} s of CPU time "
                            f"({self.ops:,} steps: a loop that does not end?)")

    def size(self, chars: int, what: str) -> None:
        if chars > self.cap:
            raise _LimitHit(f"{what} would be {chars:,} characters long (the limit for one "
                            f"render is {self.cap:,})")

    def create(self, chars: int, what: str) -> None:
        self.size(chars, what)
        if self.seconds is None:
            return  # constant folding while compiling: nothing to accumulate across templates
        self.made += chars
        if self.made > self.work_cap:
            raise _LimitHit(f"it made more than {self.work_cap:,} characters of text in one "
                            f"render (the last: {what})")

    def result(self, value: Any, what: str) -> Any:
        """Check (and count) a value a call or filter produced."""
        if isinstance(value, str):
            self.create(len(value), what)
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            self.size(measure(value, self.cap), what)
        return value


# Hooks outside a render (constant folding while compiling) get a budget without a deadline.
_COMPILING = _Budget(OUTPUT_FLOOR_CHARS, None)
_CURRENT: contextvars.ContextVar[_Budget] = contextvars.ContextVar("tailor_template_budget",
                                                                   default=_COMPILING)


def measure(value: Any, limit: int) -> int:
    """About how many characters ``str(value)`` takes, counting nested containers (each
    element at least a few); stops counting once past ``limit``."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return _ELEMENT_CHARS
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    total = 0
    stack = [iter((value,))]
    while stack:
        for v in stack[-1]:
            if isinstance(v, str):
                total += len(v) + _ELEMENT_CHARS
            elif isinstance(v, dict):
                total += _ELEMENT_CHARS
                stack.append(chain.from_iterable(v.items()))
                break
            elif isinstance(v, (list, tuple, set, frozenset)):
                total += _ELEMENT_CHARS
                stack.append(iter(v))
                break
            elif isinstance(v, int) and not isinstance(v, bool):
                total += v.bit_length() // 3 + _ELEMENT_CHARS
            else:
                total += _ELEMENT_CHARS
            if total > limit:
                return total
        else:
            stack.pop()
        if total > limit:
            return total
    return total


def _depth_and_items(value: Any, limit: int) -> tuple[int, int]:
    """(nesting depth, element count) of a JSON-like value, counting up to ``limit`` elements."""
    depth = items = 0
    stack = [(value, 1)]
    while stack and items <= limit:
        v, d = stack.pop()
        items += 1
        if isinstance(v, dict):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v)
    return depth, items


# ----------------------------------------------------------------------------------------------
# Pre-checks of operations whose result can dwarf their inputs


def _int_arg(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_ints(b: _Budget, args, kwargs, what: str) -> None:
    # A width, count or size argument larger than the output may be is a bomb (center(10**9)).
    for v in chain(args, kwargs.values()):
        n = _int_arg(v)
        if n is not None and n > b.cap:
            b.size(n, f"{what} with an argument of {n:,}")


_FORMAT_FIELD = re.compile(r"%|\{")
_DIGITS = re.compile(r"\d+")


def _format_size(b: _Budget, fmt: str, args: Any) -> int:
    """An upper bound of ``fmt % args`` / ``fmt.format(*args)``: every field the largest
    argument, plus every number written in the format (widths, precisions)."""
    largest = max((measure(a, b.cap) for a in args), default=0) if isinstance(
        args, (tuple, list)) else measure(args, b.cap)
    widths = sum(int(d) if len(d) < 12 else b.cap + 1 for d in _DIGITS.findall(fmt))
    return len(fmt) + len(_FORMAT_FIELD.findall(fmt)) * largest + widths


def _replace_size(s: str, old: str, new: str, count: int | None) -> int:
    n = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def _join_size(b: _Budget, sep: str, items: list) -> int:
    return sum(measure(x, b.cap) for x in items) + len(sep) * max(0, len(items) - 1)


def _check_str_method(b: _Budget, obj: Any, args: tuple, kwargs: dict) -> tuple:
    """Pre-check a bound ``str`` method; returns ``args`` (a generator given to join is
    materialized, so it can be measured)."""
    s, name = obj.__self__, obj.__name__
    if name in ("center", "ljust", "rjust", "zfill") and args and _int_arg(args[0]):
        b.size(max(len(s), args[0]), f"str.{name}({args[0]:,})")
    elif name == "expandtabs":
        tab = _int_arg(args[0] if args else kwargs.get("tabsize", 8)) or 0
        b.size(len(s) + s.count("\t") * tab, "str.expandtabs")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and \
            isinstance(args[1], str):
        count = _int_arg(args[2]) if len(args) > 2 else _int_arg(kwargs.get("count"))
        b.size(_replace_size(s, args[0], args[1], count), "str.replace")
    elif name == "join" and args:
        items = list(args[0])
        b.size(_join_size(b, s, items), "str.join")
        args = (items,) + args[1:]
    return args


def _filter_checks() -> dict[str, Callable[..., tuple]]:
    """name -> check(budget, value, args, kwargs) -> (value, args), run before the filter."""

    def center(b, value, args, kwargs):
        width = _int_arg(args[0] if args else kwargs.get("width", 80)) or 0
        b.size(max(measure(value, b.cap), width), f"center({width:,})")
        return value, args

    def indent(b, value, args, kwargs):
        width = args[0] if args else kwargs.get("width", 4)
        width = len(width) if isinstance(width, str) else (_int_arg(width) or 0)
        s = str(value) if isinstance(value, str) else ""
        b.size(len(s) + (s.count("\n") + 1) * width, "indent")
        return value, args

    def wordwrap(b, value, args, kwargs):
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring")
        s = value if isinstance(value, str) else ""
        b.size(len(s) * (1 + len(wrap if isinstance(wrap, str) else "\n")), "wordwrap")
        return value, args

    def replace(b, value, args, kwargs):
        if isinstance(value, str) and len(args) >= 2:
            count = _int_arg(args[2]) if len(args) > 2 else _int_arg(kwargs.get("count"))
            b.size(_replace_size(value, str(args[0]), str(args[1]), count), "replace")
        return value, args

    def join(b, value, args, kwargs):
        items = list(value)
        sep = args[0] if args else kwargs.get("d", "")
        b.size(_join_size(b, sep if isinstance(sep, str) else "", items), "join")
        return items, args

    def format_(b, value, args, kwargs):
        if isinstance(value, str):
            b.size(_format_size(b, value, args or tuple(kwargs.values())), "format")
        return value, args

    def tojson(b, value, args, kwargs):
        ind = kwargs.get("indent", args[1] if len(args) > 1 else None)
        ind = len(ind) if isinstance(ind, str) else (_int_arg(ind) or 0)
        size = measure(value, b.cap)
        if ind:
            depth, items = _depth_and_items(value, b.cap)
            size += items * (ind * depth + 1)
        b.size(size, "tojson")
        return value, args

    def string(b, value, args, kwargs):
        b.size(measure(value, b.cap), "string")
        return value, args

    def batch(b, value, args, kwargs):
        n = _int_arg(args[0] if args else kwargs.get("linecount", kwargs.get("slices"))) or 0
        fill = args[1] if len(args) > 1 else kwargs.get("fill_with")
        b.size(measure(value, b.cap) + n * (measure(fill, b.cap) + _ELEMENT_CHARS), "batch")
        return value, args

    def sum_(b, value, args, kwargs):
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if not isinstance(start, (int, float)):
            # sum() of lists or strings copies the running total at every step (quadratic).
            value = list(value)
            b.size(measure(value, b.cap) * max(1, len(value)) // 2, "sum")
        return value, args

    return {"center": center, "indent": indent, "wordwrap": wordwrap, "replace": replace,
            "join": join, "format": format_, "tojson": tojson, "string": string,
            "pprint": string, "list": string, "batch": batch, "slice": batch, "sum": sum_}


_FILTER_CHECKS = _filter_checks()


def _guard_filter(name: str, func: Callable) -> Callable:
    pre = _FILTER_CHECKS.get(name)
    # Filters that take the context, eval context or environment first (jinja's pass_*).
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg
    def guarded(*args, **kwargs):
        b = _CURRENT.get()
        b.tick()
        if len(args) > skip:
            value, rest = args[skip], args[skip + 1:]
            _check_ints(b, rest, kwargs, f"the {name} filter")
            if pre is not None:
                value, rest = pre(b, value, rest, kwargs)
                args = args[:skip] + (value,) + rest
        return b.result(func(*args, **kwargs), f"the result of the {name} filter")

    return guarded


# ----------------------------------------------------------------------------------------------
# The environment


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with two changes: every loop iterates through
    the ``tailor_loop_items`` filter (which ticks per item), and ``~`` checks its parts' size
    before joining them."""

    def visit_Template(self, node: nodes.Template, frame=None) -> None:
        # Before anything is generated (the filters used are collected first). Jinja forbids
        # new node types; a filter compiles to a direct call, without a sandbox hook.
        for loop in node.find_all(nodes.For):
            it = loop.iter
            if not (isinstance(it, nodes.Filter) and it.name == _LOOP_FILTER):
                loop.iter = nodes.Filter(it, _LOOP_FILTER, [], [], None, None,
                                         lineno=it.lineno)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        # As CodeGenerator.visit_Concat, the parts first through environment.guard_concat.
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.guard_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


_LOOP_FILTER = "tailor_loop_items"  # the filter every loop's iterable goes through


class _LoopItems:
    """An iterable that ticks the budget per item; keeps ``len`` (``loop.length``) cheap."""

    __slots__ = ("items",)

    def __init__(self, items: Any):
        self.items = items

    def __iter__(self):
        tick = _CURRENT.get().tick
        for item in self.items:
            tick()
            yield item

    def __len__(self) -> int:
        return len(self.items)


class _GenerationTag(Extension):
    """Accept `{% generation %}...{% endgeneration %}` (used by some templates) as plain text."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every step checked against the current render's budget."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP_FILTER] = _LoopItems
        self.finalize = self._finalize

    # -- hooks the compiled template calls ------------------------------------------------

    # Operators, attribute and item lookups and output do not tick the clock: between two
    # loop iterations or calls (which do) a template runs each of them at most once per
    # place in its source. They are the hot path of every render.

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        b = _CURRENT.get()
        if operator == "+" and left.__class__ is str and right.__class__ is str:
            n = len(left) + len(right)  # the common case, inline: '<|im_start|>' + role
            b.made += n
            if n > b.cap or b.made > b.work_cap:
                b.made -= n
                b.create(n, "a joined string")
            return left + right
        if operator == "*":
            seq, n = (left, _int_arg(right)) if _int_arg(right) is not None else (
                right, _int_arg(left))
            if n is not None and isinstance(seq, (str, list, tuple)):
                size = measure(seq, b.cap) * max(n, 0)
                if isinstance(seq, str):
                    b.create(size, f"a string repeated {n:,} times")
                else:
                    b.size(size, f"a list repeated {n:,} times")
            elif _int_arg(left) is not None and _int_arg(right) is not None:
                self._int_bits(left.bit_length() + right.bit_length())
        elif operator == "**":
            if _int_arg(left) is not None and _int_arg(right) is not None and right > 0 and \
                    abs(left) > 1:
                self._int_bits(left.bit_length() * right)
        elif operator == "+":
            if isinstance(left, str) and isinstance(right, str):  # str subclasses (Markup)
                b.create(len(left) + len(right), "a joined string")
            elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
                b.size(measure(left, b.cap) + measure(right, b.cap), "a joined list")
        elif operator == "%" and isinstance(left, str):
            b.create(_format_size(b, left, right), "a %-formatted string")
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def _int_bits(bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise _LimitHit(f"a number of about {bits:,} bits would be computed (the limit "
                            f"is {MAX_INT_BITS:,})")

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - as jinja's own
        b = _CURRENT.get()
        b.tick()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        if isinstance(getattr(target, "__self__", None), str):
            if target.__name__ in ("format", "format_map"):
                values = (tuple(args) + tuple(kwargs.values())) if target.__name__ == "format" \
                    else tuple((args[0] if args else {}).values())
                b.create(_format_size(b, target.__self__, values), f"str.{target.__name__}")
            else:
                args = _check_str_method(b, target, args, kwargs)
        elif isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (_LoopItems(args[0]),) + args[1:]
        _check_ints(b, args, kwargs, f"a call of {getattr(__obj, '__name__', 'a function')}")
        return b.result(super().call(__context, __obj, *args, **kwargs),
                        f"the result of {getattr(__obj, '__name__', 'a call')}")

    def guard_concat(self, parts: tuple) -> tuple:
        b = _CURRENT.get()
        b.tick()
        b.create(sum(measure(p, b.cap) for p in parts), "a string joined with ~")
        return parts

    def concat(self, pieces) -> str:  # type: ignore[override] - captured blocks, macros
        pieces = list(pieces)
        b = _CURRENT.get()
        b.tick()
        b.create(sum(len(p) for p in pieces), "a captured block or macro output")
        return "".join(pieces)

    def _finalize(self, value: Any) -> Any:
        # Every {{ value }}: a container becomes its str(), so size it before that happens.
        if value.__class__ is not str and isinstance(value, (list, tuple, dict, set,
                                                             frozenset)):
            b = _CURRENT.get()
            b.create(measure(value, b.cap), "a printed list or dict")
        return value


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False, **_):
    # Jinja's own tojson escapes HTML characters, which would change the rendered text.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message: str):
    raise TemplateRaised(message)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    from jinja2.utils import generate_lorem_ipsum

    words = n * max if n > 0 and max > 0 else 0
    _CURRENT.get().size(words * 12, "lipsum()")  # about 12 characters a word
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


@functools.lru_cache(maxsize=32)
def _environment(fixed_date: str | None) -> BoundedSandbox:
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True,
                         extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _guard_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["lipsum"] = _lipsum
    if fixed_date is None:
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    else:
        env.globals["strftime_now"] = lambda fmt: fixed_date
    return env


# ----------------------------------------------------------------------------------------------
# The renderer


def output_cap(context: dict, max_tokens: int | None = None) -> int:
    """Characters one render may produce: the floor, or four times its input (messages and
    tools), or 16 characters a token of ``max_tokens``, whichever is largest."""
    inputs = 0
    for m in context.get("messages") or ():
        if isinstance(m, dict):  # the usual message: str values, sized without a walk
            inputs += sum(len(v) if isinstance(v, str) else measure(v, 1 << 40)
                          for v in m.values())
        else:
            inputs += measure(m, 1 << 40)
    if context.get("tools"):
        inputs += measure(context["tools"], 1 << 40)
    return max(OUTPUT_FLOOR_CHARS, OUTPUT_PER_INPUT_CHAR * inputs, 16 * (max_tokens or 0))


class ChatTemplate:
    """A chat template compiled in the bounded sandbox. ``origin`` names where it came from
    (a model folder's file) for messages. Raises TailorError on bad syntax."""

    def __init__(self, source: str, origin: str, *, fixed_date: str | None = None):
        self.source, self.origin = source, origin
        try:
            self.template = _environment(fixed_date).from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TailorError(f"{origin}: chat template line {e.lineno}: {e.message}",
                              hint="fix the template or choose another with --chat-template"
                              ) from None
        except _LimitHit as e:  # pragma: no cover - constant folding swallows these
            raise self._limit_error(str(e)) from None

    def _limit_error(self, what: str) -> TemplateLimitError:
        return TemplateLimitError(
            f"{self.origin}: the chat template was stopped: {what}",
            hint="the template is broken or hostile: fix it, or give another with "
                 "--chat-template FILE")

    def render(self, context: dict, max_tokens: int | None = None,
               seconds: float = RENDER_CPU_SECONDS) -> str:
        """The template rendered with ``context`` (messages, tools, add_generation_prompt,
        special tokens). Raises TemplateLimitError past the time or size budget; other
        template errors (SecurityError, TemplateRaised, UndefinedError...) as they are."""
        budget = _Budget(output_cap(context, max_tokens), seconds)
        token = _CURRENT.set(budget)
        pieces: list[str] = []
        total = 0
        try:
            for piece in self.template.generate(context):
                total += len(piece)
                if total > budget.cap:
                    raise _LimitHit(f"it wrote more than {budget.cap:,} characters for one "
                                    "conversation")
                pieces.append(piece)
        except _LimitHit as e:
            raise self._limit_error(str(e)) from None
        except RecursionError:
            raise self._limit_error("it recursed too deeply (a macro that calls itself "
                                    "without end?)") from None
        except MemoryError:
            raise self._limit_error("it ran out of memory") from None
        finally:
            _CURRENT.reset(token)
        return "".join(pieces)


@functools.lru_cache(maxsize=16)
def compile_chat_template(source: str, origin: str, fixed_date: str | None = None
                          ) -> ChatTemplate:
    """A cached ChatTemplate (``fixed_date``: what ``strftime_now`` returns, for renders that
    must be comparable)."""
    return ChatTemplate(source, origin, fixed_date=fixed_date)


def template_origin(tokenizer: Any) -> str:
    """Where a tokenizer's chat template was read from, for messages: the model folder's
    chat_template.jinja (which transformers prefers) or tokenizer_config.json."""
    name = getattr(tokenizer, "name_or_path", "") or ""
    folder = Path(name) if name else None
    if folder is not None and folder.is_dir():
        jinja_file = folder / "chat_template.jinja"
        return str(jinja_file if jinja_file.is_file() else folder / "tokenizer_config.json")
    return f"the chat template of {name}" if name else "the model's chat template"
