"""Message templates: checked when saved, rendered when a message is sent.

Templates are Jinja2 run in an immutable sandbox. The sandbox stops a template
from reaching Python internals but not from burning CPU or memory, so this
module also refuses costly constructs when a template is compiled and meters
the work a render does. Customer data only ever reaches a template as merge
values in the render context; template source is never built from it.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, cast

from jinja2 import Template, meta, nodes
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Context, StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from jinja2.utils import Namespace, missing
from jinja2.visitor import NodeTransformer

from ledger.errors import MissingMergeTag, TemplateError
from ledger.values import Channel

MAX_TEMPLATE_SOURCE = 100_000
"""Most characters one part (subject, text or HTML) of a template may hold."""

MAX_RENDERED_TEXT = 100_000
"""Most characters a rendered subject, plain-text part or SMS body may hold."""

MAX_RENDERED_HTML = 200_000
"""Most characters a rendered HTML part may hold."""

MAX_SUBJECT = 200
"""Most characters a rendered subject may hold, after trimming whitespace."""

MAX_RANGE = 1_000
"""Most numbers one call to range() may produce."""

MAX_RENDER_STEPS = 1_000_000
"""Most steps of work (loop operations, characters filtered) one part may take."""

# No single value inside a render needs to be longer than the longest output.
_MAX_VALUE = MAX_RENDERED_HTML
_MAX_INT_BITS = 4_096
_MAX_FORMAT_WIDTH = 100

STANDARD_MERGE_TAGS: Mapping[str, str] = types.MappingProxyType(
    {
        "customer_name": "The customer's full name.",
        "customer_first_name": "The customer's first name, for greetings.",
        "customer_email": "The customer's email address.",
        "customer_phone": "The customer's phone number.",
        "company_name": "The name of your company, the one sending the message.",
        "rep_name": "The name of the staff member sending the message.",
        "rep_email": "The email address of the staff member sending the message.",
    }
)


@dataclass(frozen=True)
class TemplateContent:
    """The source of one template version; subject and html are for email only."""

    subject: str | None
    text: str
    html: str | None


@dataclass(frozen=True)
class RenderedContent:
    """A template rendered with one message's merge values."""

    subject: str | None
    text: str
    html: str | None


class _Refused(Exception):
    """A template asked for something too costly or not allowed."""

    def __init__(self, detail: str, lineno: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.lineno = lineno

    def sentence(self, label: str) -> str:
        where = f" (line {self.lineno})" if self.lineno is not None else ""
        return f"{label}{where} {self.detail}"


@dataclass(slots=True)
class _RenderState:
    field: str
    steps_left: int


# Guards run deep inside Jinja's generated code, which has no way to pass
# per-render state down to them; a context variable carries it instead.
_STATE: ContextVar[_RenderState | None] = ContextVar("ledger_template", default=None)


def _charge(steps: int) -> None:
    state = _STATE.get()
    if state is None:
        return
    state.steps_left -= steps
    if state.steps_left < 0:
        raise _Refused(
            f"takes more than {MAX_RENDER_STEPS:,} steps of work to render; "
            "loop over fewer items or do less with long text."
        )


def _size(value: object) -> int:
    if isinstance(value, str | list | tuple | dict):
        return len(value)
    return 0


def _check_length(length: int, what: str) -> None:
    if length > _MAX_VALUE:
        raise _Refused(
            f"would build a value of {length:,} characters with {what}; the limit "
            f"is {_MAX_VALUE:,}, so use shorter text or fewer repeats."
        )


def _check_size(value: object) -> None:
    _check_length(_size(value), "that expression")


def _check_bits(bits: int, op: str) -> None:
    if bits > _MAX_INT_BITS:
        raise _Refused(
            f"would compute a number of about {bits:,} bits with {op}; the limit "
            f"is {_MAX_INT_BITS:,} bits, so use smaller numbers."
        )


_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: str) -> None:
    # A width such as %999999999d allocates the whole padded string up front.
    for field in _PRINTF_FIELD.finditer(template):
        for number in field.groups():
            if number and (number == "*" or int(number[:4]) > _MAX_FORMAT_WIDTH):
                raise _Refused(
                    f"asks for a format width or precision of '{number}'; the "
                    f"limit is {_MAX_FORMAT_WIDTH}, so use a smaller number."
                )


def _check_repeat(left: object, right: object) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            _check_length(len(seq) * max(times, 0), "*")
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length(), "*")


def _check_power(base: object, exponent: object) -> None:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent > 0
    ):
        _check_bits(base.bit_length() * exponent, "**")


_BINOPS = SandboxedEnvironment.default_binop_table
_GUARDED_BINOPS = frozenset({"*", "**", "+", "%"})


def _guarded_binop(op: str, left: Any, right: Any) -> Any:
    if op == "*":
        _check_repeat(left, right)
    elif op == "**":
        _check_power(left, right)
    elif op == "+" and isinstance(left, str | list | tuple):
        _check_length(len(left) + _size(right), "+")
    elif op == "%" and isinstance(left, str):
        _check_printf(left)
    return _BINOPS[op](left, right)


def _check_replace(
    s: object, old: object, new: object, count: object = None, *_: object, **__: object
) -> None:
    text, old_text, new_text = str(s), str(old), str(new)
    hits = text.count(old_text) if old_text else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_length(len(text) + hits * (len(new_text) - len(old_text)), "replace")


def _check_join(value: object, d: object = "", *_: object, **__: object) -> None:
    if isinstance(value, str):
        count = chars = len(value)
    elif isinstance(value, list | tuple | dict | range | set | frozenset):
        count = len(value)
        chars = sum(len(item) for item in value if isinstance(item, str))
    else:
        return
    _check_length(chars + max(count - 1, 0) * len(str(d)), "join")


def _check_indent(s: object, width: object = 4, *_: object, **__: object) -> None:
    text = str(s)
    pad = len(width) if isinstance(width, str) else width
    if isinstance(pad, int):
        _check_length(len(text) + (text.count("\n") + 1) * pad, "indent")


def _check_wordwrap(
    s: object,
    width: object = 79,
    break_long_words: object = True,
    wrapstring: object = None,
    *_: object,
    **__: object,
) -> None:
    # The default newline at most doubles the text; a long wrapstring multiplies it.
    if isinstance(wrapstring, str):
        _check_length(len(str(s)) * (1 + len(wrapstring)), "wordwrap")


def _check_format(value: object, *_: object, **__: object) -> None:
    if isinstance(value, str):
        _check_printf(value)


def _check_sum(
    iterable: object,
    attribute: object = None,
    start: object = 0,
    *_: object,
    **__: object,
) -> None:
    # Summing lists copies the growing total each time: quadratic work.
    if not isinstance(start, int | float):
        raise _Refused(
            "uses sum() with a start that is not a number; sum only adds numbers."
        )


_FILTER_CHECKS: Mapping[str, Callable[..., None]] = {
    "replace": _check_replace,
    "join": _check_join,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "format": _check_format,
    "sum": _check_sum,
}

# Filters that only pad, split or shuffle, and are not worth guarding.
_REMOVED_FILTERS = frozenset({"batch", "center", "random", "slice"})


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    check = _FILTER_CHECKS.get(name)
    # Filters marked with pass_context and friends take Jinja's object first.
    first = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > first and isinstance(args[first], types.GeneratorType):
            # Materialise so the work is counted and the checks see real lengths.
            args = (*args[:first], list(args[first]), *args[first + 1 :])
        if len(args) > first:
            _charge(1 + _size(args[first]))
        if check is not None:
            check(*args[first:], **kwargs)
        result = func(*args, **kwargs)
        _check_size(result)
        return result

    return guarded


def _guarded_test(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _charge(1 + sum(_size(arg) for arg in args))
        return func(*args, **kwargs)

    return guarded


def _metered(value: Iterable[Any], cost: int) -> Iterator[Any]:
    """Charge each turn of a loop with the number of operations in its body."""
    for item in value:
        _charge(cost)
        yield item


def _sized(value: object) -> object:
    """Charge an operand of a comparison or ~ with its length, then pass it on."""
    _charge(_size(value))
    return value


# Names a template cannot type, so only the instrumentation below uses them.
_METER_FILTER = "(metered loop)"
_SIZED_FILTER = "(sized operand)"


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    try:
        count = len(numbers)
    except OverflowError:
        count = MAX_RANGE + 1
    if count > MAX_RANGE:
        raise _Refused(
            f"asks range() for more than {MAX_RANGE:,} numbers; loop over fewer."
        )
    return numbers


class _BoundedNamespace(Namespace):
    """A namespace() whose values stay small, as they carry state across loops."""

    def __setitem__(self, name: str, value: Any) -> None:
        _check_size(value)
        super().__setitem__(name, value)


_CALLABLE_METHODS = frozenset(
    {
        # text
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "isalnum",
        "isalpha",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "removeprefix",
        "removesuffix",
        "replace",
        "rfind",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        # mappings and sequences
        "get",
        "index",
        "items",
        "keys",
        "values",
        # dates and times
        "date",
        "isoformat",
        "isoweekday",
        "strftime",
        "time",
        "weekday",
        # loop helpers
        "changed",
        "cycle",
        "next",
        "reset",
    }
)


class _MergeTagUndefined(StrictUndefined):
    """StrictUndefined that reports a missing merge tag as MissingMergeTag."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        if (
            self._undefined_hint is None
            and self._undefined_obj is missing
            and isinstance(self._undefined_name, str)
        ):
            state = _STATE.get()
            raise MissingMergeTag(state.field if state else "", self._undefined_name)
        super()._fail_with_undefined_error(*args, **kwargs)


def _point_operators_at_override() -> None:
    # Undefined binds its operators (__str__, __bool__, __iter__, ...) to the
    # base class's function object instead of looking it up on self, so each
    # one must be pointed at the override.
    base = Undefined._fail_with_undefined_error
    for name, value in {**vars(Undefined), **vars(StrictUndefined)}.items():
        if value is base:
            setattr(
                _MergeTagUndefined, name, _MergeTagUndefined._fail_with_undefined_error
            )


_point_operators_at_override()


class _LedgerSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on cost and on which methods run."""

    intercepted_binops = _GUARDED_BINOPS

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _guarded_binop(operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return not callable(value) or attr in _CALLABLE_METHODS

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        return self.undefined(
            f"the attribute '{attribute}' of a {type(obj).__name__} value",
            name=attribute,
            obj=obj,
            exc=SecurityError,
        )

    def wrap_str_format(self, value: Any) -> None:
        # str.format can pad to any width; returning None leaves 'format' to
        # is_safe_attribute, which refuses it.
        return None

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(obj, "__self__", None)
        _charge(1 + _size(owner) + sum(_size(arg) for arg in args))
        if isinstance(owner, str) and getattr(obj, "__name__", None) == "replace":
            _check_replace(owner, *args, **kwargs)
        result = super().call(context, obj, *args, **kwargs)
        _check_size(result)
        return result


def _make_environment(autoescape: bool) -> _LedgerSandbox:
    env = _LedgerSandbox(
        autoescape=autoescape,
        undefined=_MergeTagUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters = {
        name: _guarded_filter(name, func)
        for name, func in env.filters.items()
        if name not in _REMOVED_FILTERS
    }
    env.filters[_METER_FILTER] = _metered
    env.filters[_SIZED_FILTER] = _sized
    # Jinja's test table is inferred as plain "function"; it holds callables.
    tests = cast("dict[str, Callable[..., Any]]", env.tests)
    env.tests = {name: _guarded_test(func) for name, func in tests.items()}
    del env.globals["lipsum"]
    env.globals["range"] = _bounded_range
    env.globals["namespace"] = _BoundedNamespace
    return env


_HTML_ENV = _make_environment(autoescape=True)
_TEXT_ENV = _make_environment(autoescape=False)

_FORBIDDEN_TAGS: Mapping[type[nodes.Node], str] = {
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from %}",
    nodes.Extends: "{% extends %}",
    nodes.Block: "{% block %}",
}

_UNKNOWN = object()


def _fold(node: nodes.Node, memo: dict[int, object]) -> object:
    """Evaluate a constant expression through the guards, or return _UNKNOWN."""
    key = id(node)
    if key in memo:
        return memo[key]
    value: object = _UNKNOWN
    if isinstance(node, nodes.BinExpr) and node.operator in _BINOPS:
        left, right = _fold(node.left, memo), _fold(node.right, memo)
        if left is not _UNKNOWN and right is not _UNKNOWN:
            try:
                value = _guarded_binop(node.operator, left, right)
            except (ArithmeticError, TypeError, ValueError):
                value = _UNKNOWN
    elif isinstance(node, nodes.Expr):
        try:
            value = node.as_const()
        except nodes.Impossible:
            value = _UNKNOWN
    memo[key] = value
    return value


def _private_name(node: nodes.Node) -> str | None:
    """The name a node looks up, if it is one that starts with an underscore."""
    if isinstance(node, nodes.Getattr):
        name: object = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = node.arg.value
    else:
        return None
    return name if isinstance(name, str) and name.startswith("_") else None


def _inspect(tree: nodes.Template) -> None:
    """Refuse constructs that could escape the sandbox or run without bound."""
    memo: dict[int, object] = {}
    for node in tree.find_all(nodes.Node):
        tag = _FORBIDDEN_TAGS.get(type(node))
        if tag is not None:
            raise _Refused(
                f"uses {tag}, which templates may not use; write that content "
                "into this template directly.",
                node.lineno,
            )
        if isinstance(node, nodes.For) and node.recursive:
            raise _Refused(
                "uses a recursive loop, which templates may not use; loop over a "
                "flat list instead.",
                node.lineno,
            )
        private = _private_name(node)
        if private is not None:
            raise _Refused(
                f"uses something templates may not: the attribute '{private}'. "
                "Remove it; names starting with _ are off limits.",
                node.lineno,
            )
        try:
            if (
                isinstance(node, nodes.Call)
                and isinstance(node.node, nodes.Name)
                and node.node.name == "range"
            ):
                args = [_fold(arg, memo) for arg in node.args]
                numbers = [arg for arg in args if isinstance(arg, int)]
                if len(numbers) == len(args):
                    _bounded_range(*numbers)
            elif isinstance(node, nodes.BinExpr):
                _fold(node, memo)
        except _Refused as exc:
            raise _Refused(exc.detail, node.lineno) from exc


def _through(name: str, expr: nodes.Node, *args: object) -> nodes.Filter:
    consts: list[nodes.Expr] = [nodes.Const(a, lineno=expr.lineno) for a in args]
    return nodes.Filter(expr, name, consts, [], None, None, lineno=expr.lineno)


class _Instrument(NodeTransformer):
    """Rewrite a parsed template so that the work it does is charged.

    The sandbox sees attribute access, calls and some operators, but loops,
    comparisons, ~ and slices run as plain Python; routing them through filters
    lets each one charge the render's step budget by the size it touches.
    """

    def visit_For(self, node: nodes.For) -> nodes.Node:
        cost = 1 + sum(1 for _ in node.find_all(nodes.Node))
        self.generic_visit(node)
        node.iter = _through(_METER_FILTER, node.iter, cost)
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        node.expr = _through(_SIZED_FILTER, node.expr)
        for operand in node.ops:
            operand.expr = _through(_SIZED_FILTER, operand.expr)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_through(_SIZED_FILTER, part) for part in node.nodes]
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        # Jinja compiles slices as plain Python, past the sandbox's getitem.
        if isinstance(node.arg, nodes.Slice):
            return _through(_SIZED_FILTER, node)
        return node


class _Compiled(NamedTuple):
    template: Template
    tags: frozenset[str]


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> _Compiled:
    env = _HTML_ENV if html else _TEXT_ENV
    tree = env.parse(source)
    _inspect(tree)
    tags = frozenset(meta.find_undeclared_variables(tree))
    _Instrument().visit(tree)
    tree.set_environment(env)
    template = env.from_string(tree)
    # Each render copies the globals; a plain dict copies several times faster
    # than Jinja's ChainMap, and the environments' globals never change.
    template.globals = dict(template.globals)
    return _Compiled(template, tags)


class _Part(NamedTuple):
    field: str
    label: str
    html: bool
    limit: int


_SUBJECT = _Part("subject", "The subject", False, MAX_RENDERED_TEXT)
_EMAIL_TEXT = _Part("text", "The plain-text part", False, MAX_RENDERED_TEXT)
_SMS_TEXT = _Part("text", "The SMS body", False, MAX_RENDERED_TEXT)
_HTML = _Part("html", "The HTML part", True, MAX_RENDERED_HTML)

_RENDER_FAILURES = (
    JinjaTemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    RecursionError,
)

_LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def _clause(exc: BaseException) -> str:
    return str(exc).rstrip(".")


def _parts(content: TemplateContent, channel: Channel) -> list[tuple[_Part, str]]:
    """Pair each part of the template with its source, checking the shape."""
    if channel is Channel.SMS:
        if content.subject is not None:
            raise TemplateError(
                "subject",
                "An SMS has no subject; leave the subject out and put everything "
                "in the text.",
            )
        if content.html is not None:
            raise TemplateError(
                "html",
                "An SMS has no HTML part; leave the HTML out and put everything "
                "in the text.",
            )
        parts = [(_SMS_TEXT, content.text)]
    else:
        if content.subject is None:
            raise TemplateError(
                "subject", "An email needs a subject; write one for the template."
            )
        parts = [(_SUBJECT, content.subject), (_EMAIL_TEXT, content.text)]
        if content.html is not None:
            parts.append((_HTML, content.html))
    for part, source in parts:
        if len(source) > MAX_TEMPLATE_SOURCE:
            raise TemplateError(
                part.field,
                f"{part.label} is {len(source):,} characters long; the limit is "
                f"{MAX_TEMPLATE_SOURCE:,}, so shorten it.",
            )
    return parts


def _compile_part(part: _Part, source: str) -> _Compiled:
    try:
        return _compile(source, part.html)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            part.field,
            f"{part.label} has a template syntax error on line {exc.lineno}: "
            f"{(exc.message or 'invalid syntax').rstrip('.')}. Fix that line; "
            "docs/templates.md lists the tags and filters templates can use.",
        ) from exc
    except _Refused as exc:
        raise TemplateError(part.field, exc.sentence(part.label)) from exc
    except (RecursionError, SyntaxError) as exc:
        raise TemplateError(
            part.field,
            f"{part.label} is nested too deeply to compile; split long "
            "expressions into {% set %} steps.",
        ) from exc


def _render_part(part: _Part, source: str, context: Mapping[str, object]) -> str:
    template = _compile_part(part, source).template
    token = _STATE.set(_RenderState(part.field, MAX_RENDER_STEPS))
    try:
        chunks: list[str] = []
        length = 0
        for chunk in template.generate(context):
            length += len(chunk)
            if length > part.limit:
                raise _Refused(
                    f"renders to more than {part.limit:,} characters, the limit; "
                    "shorten it or the merge values it repeats."
                )
            chunks.append(chunk)
        return "".join(chunks)
    except _Refused as exc:
        raise TemplateError(part.field, exc.sentence(part.label)) from exc
    except SecurityError as exc:
        raise TemplateError(
            part.field,
            f"{part.label} uses something templates may not: {_clause(exc)}. "
            "Remove it; templates may print merge tags, use filters and call the "
            "methods listed in docs/templates.md.",
        ) from exc
    except _RENDER_FAILURES as exc:
        raise TemplateError(
            part.field,
            f"{part.label} could not be rendered: {_clause(exc)}. Check its "
            "expressions and the merge values they use.",
        ) from exc
    finally:
        _STATE.reset(token)


def _finish_subject(rendered: str) -> str:
    subject = rendered.strip()
    if _LINE_BREAK.search(subject):
        raise TemplateError(
            "subject",
            "The subject must be one line, but it rendered with a line break; "
            "remove line breaks from the subject and the merge values it uses.",
        )
    if not subject:
        raise TemplateError(
            "subject",
            "The subject rendered empty; give it some fixed text or make sure "
            "its merge tags have values.",
        )
    if len(subject) > MAX_SUBJECT:
        raise TemplateError(
            "subject",
            f"Subject is {len(subject)} characters; the limit is {MAX_SUBJECT}. "
            "Shorten the subject or the merge values in it.",
        )
    return subject


def check_template(content: TemplateContent, channel: Channel) -> frozenset[str]:
    """Check a template before it is saved and return the merge tags it uses."""
    tags: set[str] = set()
    for part, source in _parts(content, channel):
        tags |= _compile_part(part, source).tags
    return frozenset(tags)


def render(
    content: TemplateContent, merge_values: Mapping[str, object], channel: Channel
) -> RenderedContent:
    """Render a template with one message's merge values."""
    # A value of None means the sender has no value for that tag, so it counts
    # as missing and `| default(...)` applies, rather than printing "None".
    context = {tag: value for tag, value in merge_values.items() if value is not None}
    rendered: dict[str, str] = {}
    for part, source in _parts(content, channel):
        output = _render_part(part, source, context)
        rendered[part.field] = _finish_subject(output) if part is _SUBJECT else output
    return RenderedContent(
        subject=rendered.get("subject"),
        text=rendered["text"],
        html=rendered.get("html"),
    )
