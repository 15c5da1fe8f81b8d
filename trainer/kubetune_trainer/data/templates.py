"""Prompt templates: sandboxed Jinja with strict undefined variables. Light: no torch/transformers.

Templates come from the custom resource, i.e. from untrusted users: they render in jinja2's immutable sandbox,
bounded in output, in time, and in each value they build, checked before it is built (one huge allocation
cannot be interrupted)."""
from __future__ import annotations

import ctypes
import functools
import inspect
import math
import os
import re
import string
import threading
import time
from collections.abc import Mapping

import jinja2
from jinja2 import meta
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter, sync_do_join, sync_do_sum
from jinja2.runtime import Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum, pass_environment, pass_eval_context

from kubetune_api.errors import DataError

MAX_OUTPUT_CHARS = 1_000_000  # ~250k tokens, past any model's context: only a bomb renders more
MAX_VALUE_CHARS = 1_000_000  # each string/list/printed value a template builds, so memory stays bounded
MAX_INT_DIGITS = 10_000  # Python will not even print ints over 4300 digits; bigger ones only burn CPU
MAX_RENDER_SECONDS = 2.0  # real prompts render in microseconds; this stops runaway loops
# range() stays capped by the sandbox (jinja2.sandbox.MAX_RANGE, 100,000 items).
_WATCH_INTERVAL = 0.1  # how late past its deadline a runaway render may be stopped


class _TooBig(Exception):
    """A value or the output would pass a limit: raised before it is built."""


class _RenderTimeout(BaseException):
    """Injected by the watchdog; a BaseException so that no `except Exception` in filter code swallows it."""


def _limit(size, what: str, limit: int = MAX_VALUE_CHARS, unit: str = "character") -> None:
    if size > limit:
        raise _TooBig(f"template exceeded the {limit:,}-{unit} limit on {what}")


_SCALARS = frozenset({str, int, float, bool, type(None)})
_SEQUENCES = (str, bytes, list, tuple)
_CONTAINERS = (dict, list, tuple, set, frozenset, type({}.keys()), type({}.values()), type({}.items()))
_WALKED = (*_CONTAINERS, Namespace)  # what can print bigger than it is


def _text_size(value) -> int:
    """About how long str(value) is, without building it: shared references let a small nest of lists
    print huge. Counts at least 2 per item (the ', '), so the walk stops after at most ~limit/2 steps."""
    size, stack = 0, [value]
    while stack and size <= MAX_VALUE_CHARS:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            size += len(item)
        elif isinstance(item, int):
            size += item.bit_length() // 3 + 1
        elif isinstance(item, _CONTAINERS):
            size += 2 * len(item)
            if size <= MAX_VALUE_CHARS:  # else the walk ends: pushing the items would only cost memory
                stack.extend(item.items() if isinstance(item, dict) else item)
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)  # its repr shows its attributes
        else:
            size += 24  # floats, None, cyclers, macros: short
    return size


def _numbers(parts) -> int:
    """Widths and precisions spelled in a format spec; '*' takes one from the data: unbounded."""
    return sum(MAX_VALUE_CHARS + 1 if p == "*" else int(p) for p in parts if p)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?")


def _percent_size(fmt, args) -> int:
    """Bound on len(fmt % args): spelled widths, plus each field printing all of args."""
    if not isinstance(fmt, str):
        return 0  # numbers: `%` is modulo
    specs = _PERCENT_SPEC.findall(fmt)
    return len(fmt) + _numbers(p for spec in specs for p in spec) + len(specs) * _text_size(args)


def _format_bound(fmt: str) -> tuple[int, int]:
    """(fixed size, number of fields) of fmt.format(...)."""
    try:
        specs = [spec or "" for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError:
        return 0, 0  # malformed: str.format raises the real error
    # A nested field ('{:{w}}') takes its width from the data: unbounded.
    widths = sum(MAX_VALUE_CHARS + 1 if "{" in s else _numbers(re.findall(r"\d+", s)) for s in specs)
    return len(fmt) + widths, len(specs)


def _replace_size(s, old, new) -> int:
    try:
        return len(s) + (s.count(old) if old else len(s) + 1) * len(new)
    except TypeError:
        return 0  # wrong types: replace itself raises the real error


def _width(w) -> int:
    return w if isinstance(w, int) else len(str(w))


# Estimated result size of the filters that can build big text from small input, from their arguments.
_FILTER_SIZES = {
    "center": lambda a: a["width"],
    "indent": lambda a: len(str(a["s"])) + (str(a["s"]).count("\n") + 1) * _width(a["width"]),
    "truncate": lambda a: a["length"],
    "wordwrap": lambda a: max(a["width"], len(str(a["s"])) * (1 + len(a["wrapstring"] or "\n"))),
    "batch": lambda a: a["linecount"],
    "slice": lambda a: a["slices"],
    "replace": lambda a: _replace_size(str(a["s"]), str(a["old"]), str(a["new"])),
    "format": lambda a: _percent_size(str(a["value"]), a["args"] or a["kwargs"]),
    "tojson": lambda a: _text_size(a["value"]) * (1 + _width(a["indent"] or 0)),
}


def _guard(func, name: str, size=None):
    """Wraps a filter or global: refuses arguments that would print huge, and results `size` estimates huge."""
    signature = inspect.signature(func) if size else None

    @functools.wraps(func)  # keeps jinja's pass_context/pass_environment marks
    def guarded(*args, **kwargs):
        for arg in (*args, *kwargs.values()) if kwargs else args:
            if type(arg) not in _SCALARS and isinstance(arg, _WALKED):
                _limit(_text_size(arg), f"a value passed to '{name}'")
        if signature:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            _limit(size(bound.arguments), f"the result of '{name}'")
        return func(*args, **kwargs)

    return guarded


@pass_eval_context
def _join(eval_ctx, value, d="", attribute=None):
    """jinja's join, on items gathered first so the result's size is known before it is built."""
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = list(value)
    _limit(_text_size(items) + len(str(d)) * len(items), "the result of 'join'")
    return sync_do_join(eval_ctx, items, d)


@pass_environment
def _sum(environment, iterable, attribute=None, start=0):
    """Numbers only: summing lists copies quadratically inside one C call that no limit can stop."""
    if not isinstance(start, (int, float)):
        raise SecurityError("sum() of lists or strings is not allowed; sum numbers")
    return sync_do_sum(environment, iterable, attribute, start)


def _sized(parts):
    """The parts of a join (block, macro, `a ~ b`), once their total is known to be within the limit."""
    parts = list(parts)
    _limit(sum(len(p) if type(p) is str else _text_size(p) for p in parts), "joined text")
    return parts


def _finalize(value):
    """What `{{ }}` prints: a list of shared references can print far bigger than it is."""
    if type(value) not in _SCALARS:
        _limit(_text_size(value), "a printed value")
    return value


def _method_size(owner, name: str, args, kwargs) -> int:
    """Result size of a str/bytes/int method; its int arguments are widths (center, zfill, to_bytes...)."""
    width = max((a for a in (*args, *kwargs.values()) if isinstance(a, int)), default=0)
    if name == "expandtabs":
        return len(owner) * (width or 8)
    if name == "replace" and len(args) >= 2:
        return _replace_size(owner, args[0], args[1])
    if name == "translate" and args:
        return len(owner) * _text_size(args[0])
    if name == "join" and args:
        return _text_size(args[0]) + len(owner) * len(args[0])
    return width


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node, frame) -> None:
        """`a ~ b` is no binop the sandbox sees: size-check its parts before joining them."""
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.sized((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})  # the operators that can build huge values
    sized = staticmethod(_sized)
    concat = staticmethod(lambda parts: "".join(_sized(parts)))  # set blocks, macros, filter blocks

    def __init__(self) -> None:
        # Autoescape off: prompts are plain text, not HTML. Keep a trailing newline the author wrote.
        super().__init__(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, finalize=_finalize)
        self.filters = {name: _guard(f, name, _FILTER_SIZES.get(name)) for name, f in self.filters.items()}
        self.filters.update(join=_join, sum=_sum)
        self.globals["lipsum"] = _guard(generate_lorem_ipsum, "lipsum", lambda a: a["n"] * a["max"] * 12)

    def unsafe_undefined(self, obj, attribute):
        # Raise at once rather than return an Undefined, so the message says what was refused and why.
        raise SecurityError(f"attribute {attribute!r} of a {type(obj).__name__!r} value is not allowed")

    def call_binop(self, context, operator, left, right):
        what, ints = f"the result of '{operator}'", isinstance(left, int) and isinstance(right, int)
        if operator == "%":
            _limit(_percent_size(left, right), what)
        elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            _limit(len(left) + len(right), what)
        elif operator == "*" and ints:
            _limit((left.bit_length() + right.bit_length()) * 0.302, what, MAX_INT_DIGITS, "digit")
        elif operator == "*" and isinstance(left, _SEQUENCES + (int,)) and isinstance(right, _SEQUENCES + (int,)):
            _limit(len(left) * right if isinstance(right, int) else len(right) * left, what)
        elif operator == "**" and ints and right > 0 and abs(left) > 1:
            _limit(right * math.log10(abs(left)), what, MAX_INT_DIGITS, "digit")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's names: no clash with kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes, int)):
            if __obj.__name__ == "join" and args:
                args = (list(args[0]), *args[1:])  # gather the items once, measure them, join those
            what = f"the result of {type(owner).__name__}.{__obj.__name__}()"
            _limit(_method_size(owner, __obj.__name__, args, kwargs), what)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value):
        wrapper = super().wrap_str_format(value)  # str.format, sandboxed by jinja; here also sized
        if wrapper is None:
            return None
        fixed, fields = _format_bound(value.__self__)

        def sized_format(*args, **kwargs):  # any field may print any argument
            _limit(fixed + fields * _text_size((args, kwargs)), "the result of str.format()")
            return wrapper(*args, **kwargs)

        return sized_format


_ENV = _Environment()

# Render deadlines: one long-lived watchdog thread stops renders that pass theirs by raising
# _RenderTimeout in their thread, since a loop over plain data calls no sandbox hook it could check in.
_deadlines: dict[int, float] = {}  # thread id -> deadline of the render running on it
_lock = threading.Lock()  # makes the watchdog's check-and-inject atomic with a render's end
_FIRED = math.inf
_watchdog: threading.Thread | None = None


def _set_async_exc(thread_id: int, exc) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def _watch() -> None:
    while True:
        time.sleep(_WATCH_INTERVAL)
        now = time.monotonic()
        for thread_id, deadline in _deadlines.copy().items():
            if deadline <= now:
                with _lock:
                    if _deadlines.get(thread_id) == deadline:  # still the same render
                        _deadlines[thread_id] = _FIRED
                        _set_async_exc(thread_id, _RenderTimeout)


def _start_watchdog() -> None:
    global _watchdog
    with _lock:
        if _watchdog is None:
            _watchdog = threading.Thread(target=_watch, name="template-watchdog", daemon=True)
            _watchdog.start()


def _forget_watchdog() -> None:
    """A forked child has no watchdog thread (and maybe a lock held by it): start afresh."""
    global _watchdog, _lock
    _watchdog, _lock = None, threading.Lock()
    _deadlines.clear()


os.register_at_fork(after_in_child=_forget_watchdog)


def _render(template: jinja2.Template, row: Mapping) -> str:
    if _watchdog is None:
        _start_watchdog()
    thread_id = threading.get_ident()
    _deadlines[thread_id] = time.monotonic() + MAX_RENDER_SECONDS
    try:
        chunks, size = [], 0
        for chunk in template.generate(row):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise _TooBig(f"template output exceeded the {MAX_OUTPUT_CHARS:,}-character limit")
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        with _lock:
            fired = _deadlines.pop(thread_id, None) == _FIRED
        if fired:  # drop the watchdog's exception if still pending, so it cannot strike after the render
            _set_async_exc(thread_id, None)


def _parse(parse, source: str, field: str):
    try:
        return parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"{field}: syntax error on template line {e.lineno}: {e.message}") from e
    except RecursionError as e:
        raise DataError(f"{field}: template is nested too deeply") from e


def compile_template(source: str, field: str = "dataset.promptTemplate") -> jinja2.Template:
    return _parse(_ENV.from_string, source, field)


def template_variables(source: str, field: str = "dataset.promptTemplate") -> set[str]:
    """The top-level names a template reads; each must be a column of the data."""
    return meta.find_undeclared_variables(_parse(_ENV.parse, source, field))


def render_prompt(template: jinja2.Template, row: Mapping, where: str, field: str = "dataset.promptTemplate") -> str:
    """Renders one row within the limits above; `where` (e.g. 'data.jsonl line 3') prefixes any error."""
    try:
        return _render(template, row)
    except _RenderTimeout:
        raise DataError(f"{where}: {field}: template exceeded the {MAX_RENDER_SECONDS:g} s render limit") from None
    except _TooBig as e:
        raise DataError(f"{where}: {field}: {e}") from e
    except SecurityError as e:
        raise DataError(f"{where}: {field}: template tried an unsafe operation: {e}") from e
    except jinja2.UndefinedError as e:
        raise DataError(f"{where}: {field}: {e.message}") from e
    except Exception as e:  # a filter or expression failing on this row's values
        raise DataError(f"{where}: {field} failed: {type(e).__name__}: {e}") from e
