"""Prompt templates come from untrusted resource specs: they may neither run code nor exhaust memory or time,
and every refusal is a DataError naming the row and the field."""
from __future__ import annotations

import threading
import time

import jinja2
import pytest

from kubetune_api.errors import DataError
from kubetune_trainer.data import templates
from kubetune_trainer.data.templates import compile_template, render_prompt, template_variables

FIELD = "dataset.promptTemplate"
WHERE = "data.jsonl line 3"
ROW = {"instruction": "Name a cat.", "items": ["a", "b"], "n": 3, "d": {"k": "v"}, "long": "x" * 100_000}


def render(source: str, row: dict = ROW) -> str:
    return render_prompt(compile_template(source, FIELD), row, WHERE, FIELD)


def refusal(source: str, row: dict = ROW) -> str:
    """The refusal message; it must name the row and the field."""
    with pytest.raises(DataError) as refused:
        render(source, row)
    message = str(refused.value)
    assert message.startswith(f"{WHERE}: {FIELD}"), message
    return message


@pytest.fixture
def short_limit(monkeypatch):
    """Keeps the timeout tests quick; the watchdog reads both settings as it goes."""
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.3)
    monkeypatch.setattr(templates, "_WATCH_INTERVAL", 0.02)


def test_popen_payload_is_refused_and_runs_nothing(tmp_path):
    payload = "{{ cycler.__init__.__globals__.os.popen('id > %s').read() }}{{ instruction }}"
    # The payload is real: a plain environment runs it.
    jinja2.Environment().from_string(payload % (tmp_path / "control")).render(ROW)
    assert (tmp_path / "control").exists()

    message = refusal(payload % (tmp_path / "proof"))
    assert "template tried an unsafe operation" in message and "'__init__'" in message
    assert not (tmp_path / "proof").exists()


@pytest.mark.parametrize(
    ("source", "attribute"),
    [
        ("{{ instruction.__class__ }}", "__class__"),
        ("{{ x.__class__ }}", "__class__"),  # an undefined name: still unsafe, not 'x is undefined'
        ("{{ instruction.__class__.__mro__ }}", "__class__"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"),
        ("{{ dict.__subclasses__() }}", "__subclasses__"),
        ("{{ dict.mro() }}", "mro"),
        ("{{ range.__globals__ }}", "__globals__"),
        ("{{ cycler.__init__.__globals__ }}", "__init__"),
        ("{{ lipsum.__globals__ }}", "__globals__"),
        ("{{ joiner.__init__.__globals__ }}", "__init__"),
        ("{{ namespace.__init__.__globals__ }}", "__init__"),
        ("{% set ns = namespace() %}{{ ns._Namespace__attrs }}", "_Namespace__attrs"),
        ("{{ instruction|attr('__class__') }}", "__class__"),
        ("{{ instruction['__class__'] }}", "__class__"),
        ("{{ self._TemplateReference__context }}", "_TemplateReference__context"),
        ("{{ '{0.__class__}'.format(instruction) }}", "__class__"),
        ("{{ items.append('c') }}", "append"),  # the sandbox is immutable
    ],
)
def test_attribute_walking_is_refused(source, attribute):
    message = refusal(source)
    assert "template tried an unsafe operation" in message and f"'{attribute}'" in message


BOMBS = [
    "{{ 'x' * 10**9 }}",
    "{{ 10**9 * 'x' }}",
    "{{ [1] * 10**9 }}",
    "{{ long + long * 9 + long }}",
    "{{ 10 ** (10 ** 9) }}",  # Jinja's ** is left-associative: 10 ** 10 ** 9 is (10 ** 10) ** 9, small
    "{{ (10 ** 9000) * (10 ** 9000) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%.999999999f' % 1.0 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '%s%s%s%s%s%s%s%s%s%s%s' % ((long,) * 11) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:{w}}'.format(1, w=999999999) }}",
    "{{ '{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}'.format(long) }}",
    "{{ 'x'.center(999999999) }}",
    "{{ 'x'.ljust(999999999) }}",
    "{{ 'x'.rjust(999999999) }}",
    "{{ 'x'.zfill(999999999) }}",
    "{{ (long ~ '\t').expandtabs(999) }}",
    "{{ long.replace('x', long) }}",
    "{{ long.join(range(20)|map('string')) }}",
    "{{ (1).to_bytes(999999999, 'big') }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'|indent(999999999, true) }}",
    "{{ long|replace('x', 'x\n')|indent(20, true, true) }}",
    "{{ 'x'|truncate(999999999) }}",
    "{{ 'x'|wordwrap(999999999) }}",
    "{{ long|wordwrap(1, wrapstring=long) }}",
    "{{ [1]|batch(999999999, 0)|list }}",
    "{{ ('x' * 20)|replace('', long) }}",
    "{{ '%0999999999d'|format(1) }}",
    "{{ range(20)|join(long) }}",
    "{{ [[1]]|sum(start=[]) }}",
    "{{ [long] * 20 }}",
    "{% set a = [long] * 10 %}{% set b = [a, a, a, a, a] %}{{ b }}",
    "{% set a = [long] * 10 %}{{ [a, a]|string }}",
    "{% set a = [long] * 10 %}{{ a|tojson }}",
    "{% set a = [long] * 10 %}{{ '%s' % (a,) }}",
    "{% set a = [long] * 10 %}{{ 'x' ~ a }}",
    "{{ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long }}",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set a %}{% for i in range(99999) %}xxxxxxxxx{% endfor %}{% endset %}"
    "{% set b %}{% for i in range(99999) %}{{ a }}{% endfor %}{% endset %}{{ b|length }}",
    "{% macro m() %}{% for i in range(99999) %}{{ 'x' * 100 }}{% endfor %}{% endmacro %}{{ m()|length }}",
    "{% filter upper %}{% for i in range(99999) %}{{ 'x' * 100 }}{% endfor %}{% endfilter %}",
    "{{ lipsum(99999, false, 99999, 99999)|length }}",
]
# Loops print many small pieces, each within the limits: the output limit stops them as it grows.
STREAMED_BOMBS = [
    "{% for i in range(99999) %}{% for j in range(99999) %}xxxxxxxxxx{% endfor %}{% endfor %}",
    "{% for i in range(99999) %}{{ long }}{% endfor %}",
]


@pytest.mark.parametrize("source", BOMBS)
def test_size_bombs_are_refused_before_they_are_built(source):
    # The refusal names the operation whose result would be too big: it was sized before it ran.
    # (A bomb that was built first ends as "template output exceeded", after using the memory.)
    message = refusal(source)
    assert "limit on " in message or "sum() of lists" in message, message


@pytest.mark.parametrize("source", STREAMED_BOMBS)
def test_loops_are_stopped_by_the_output_limit_as_they_print(source):
    assert refusal(source) == f"{WHERE}: {FIELD}: template output exceeded the 1,000,000-character limit"


def test_ranges_stay_capped():
    assert "Range too big" in refusal("{{ range(10**9)|list }}")
    assert "Range too big" in refusal("{% for i in range(10**9) %}{% endfor %}")
    assert render("{{ range(100000)|list|length }}") == "100000"


def test_a_loop_that_prints_nothing_is_stopped_by_the_render_time_limit():
    started = time.monotonic()
    message = refusal("{% for a in long %}{% for b in long %}{% endfor %}{% endfor %}")
    assert message == f"{WHERE}: {FIELD}: template exceeded the 2 s render limit"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "source",
    [
        "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% for i in range(99999) %}{% endfor %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{% for a in long %}{{ long.count('y') }}{% endfor %}",
    ],
)
def test_slow_templates_time_out(short_limit, source):
    message = refusal(source)
    assert "render limit" in message or "recursion" in message, message


def test_the_thread_keeps_working_after_a_timeout(short_limit):
    assert "render limit" in refusal("{% for a in long %}{% for b in long %}{% endfor %}{% endfor %}")
    assert render("{{ instruction }}") == "Name a cat."
    # No exception is left pending: past where the deadline was, plain Python runs undisturbed.
    assert render("{{ n }}") == "3"
    busy_until = time.monotonic() + 4 * templates.MAX_RENDER_SECONDS
    while time.monotonic() < busy_until:
        sum(range(1000))
    assert templates._deadlines.get(threading.get_ident()) is None


def test_renders_that_end_near_their_deadline_leave_nothing_behind(short_limit, monkeypatch):
    """Ends racing the watchdog: each render returns or times out, and nothing fires afterwards."""
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.05)
    template = compile_template("{% for a in range(30000) %}{{ a }}{% endfor %}")
    outcomes = set()
    for _ in range(40):
        try:
            outcomes.add(len(render_prompt(template, ROW, WHERE)) > 0)
        except DataError as e:
            outcomes.add("render limit" in str(e))
        for _ in range(20_000):  # Python bytecode, where a stray exception would surface
            pass
    assert outcomes <= {True}
    time.sleep(0.2)


def test_timeouts_stay_in_their_thread(short_limit):
    results = []

    def work():
        try:
            render("{% for a in long %}{% for b in long %}{% endfor %}{% endfor %}")
        except DataError as e:
            results.append(str(e))

    worker = threading.Thread(target=work)
    worker.start()
    busy_until = time.monotonic() + 3 * templates.MAX_RENDER_SECONDS
    while time.monotonic() < busy_until:  # this thread is never hit
        sum(range(1000))
    worker.join(timeout=5)
    assert results and "render limit" in results[0]


NORMAL = [
    ("Which animal is {{ instruction }}?\nAnswer:", "Which animal is Name a cat.?\nAnswer:"),
    ("{% for i in items %}{{ loop.index }}. {{ i|upper }}\n{% endfor %}", "1. A\n2. B\n"),
    ("{{ items|join(', ') }} | {{ '  padded  '|trim }} | {{ instruction|lower|replace('cat', 'dog') }}", "a, b | padded | name a dog."),
    ("{{ d|tojson }} {{ items|tojson }}", '{"k": "v"} ["a", "b"]'),
    ("{% if n > 2 %}many{% elif n %}few{% else %}none{% endif %}", "many"),
    ("{{ instruction }}\n", "Name a cat.\n"),
    ("{{ d.k }}{{ d['k'] }}{{ items[0] }}{{ items|first }}{{ items|length }}", "vvaa2"),
    ("{{ '%s-%03d' % (instruction, n) }} {{ '{}:{:>4}'.format('n', n) }} {{ '%s'|format(n) }}", "Name a cat.-003 n:   3 3"),
    (
        "{{ 'ab' * n }} {{ items + ['c'] }} {{ 2 ** 10 }} {{ n * 4 }} {{ 7 % n }} {{ 'a' ~ n ~ items }}",
        "ababab ['a', 'b', 'c'] 1024 12 1 a3['a', 'b']",
    ),
    ("{% set ns = namespace(total=0) %}{% for i in items %}{% set ns.total = ns.total + 1 %}{% endfor %}{{ ns.total }}", "2"),
    ("{% macro q(x) %}<{{ x }}>{% endmacro %}{{ q(1) }}{% set s %}{{ q(2) }}{% endset %}{{ s }}", "<1><2>"),
    ("{{ missing|default('none') }} {{ [3, 1, 2]|sort|join }} {{ range(3)|sum }} {{ 'x'|center(5) }}|", "none 123 3   x  |"),
    (
        "{{ 'a\nb'|indent(2, true) }} {{ 'hello world'|truncate(7, true, '', 0) }} {{ instruction.split()|join('_') }}",
        "  a\n  b hello w Name_a_cat.",
    ),
]


@pytest.mark.parametrize(("source", "expected"), NORMAL)
def test_normal_templates_render_as_before(source, expected):
    plain = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    assert plain.from_string(source).render(ROW) == expected
    assert render(source) == expected


def test_errors_keep_their_meaning():
    assert refusal("{{ nope }}") == f"{WHERE}: {FIELD}: 'nope' is undefined"
    assert "has no attribute 'missing'" in refusal("{{ d.missing }}")
    assert "failed: ZeroDivisionError" in refusal("{{ 1 // 0 }}")
    with pytest.raises(DataError, match=r"dataset.completionTemplate: syntax error on template line 2"):
        compile_template("ok\n{{ x", "dataset.completionTemplate")
    with pytest.raises(DataError, match=r"dataset.promptTemplate: syntax error on template line 1"):
        template_variables("{% for %}")
    assert template_variables("{{ a }}{% for x in b %}{{ x.c }}{% endfor %}") == {"a", "b"}
