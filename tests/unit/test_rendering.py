"""Unit tests for ledger.rendering: checking and rendering message templates."""

from __future__ import annotations

import datetime
from pathlib import Path

import markupsafe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidCommand, MissingMergeTag, TemplateError
from ledger.rendering import (
    MAX_RANGE,
    MAX_RENDERED_HTML,
    MAX_RENDERED_TEXT,
    MAX_SUBJECT,
    MAX_TEMPLATE_SOURCE,
    STANDARD_MERGE_TAGS,
    RenderedContent,
    TemplateContent,
    check_template,
    render,
)
from ledger.values import Channel

DOCS = Path(__file__).resolve().parents[2] / "docs" / "templates.md"

# Printable text: everything except control characters and lone surrogates.
printable = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")))


def sms(text: str) -> TemplateContent:
    return TemplateContent(subject=None, text=text, html=None)


def email(
    subject: str = "Hello", text: str = "Hello", html: str | None = None
) -> TemplateContent:
    return TemplateContent(subject=subject, text=text, html=html)


def render_sms(text: str, **merge_values: object) -> str:
    return render(sms(text), merge_values, Channel.SMS).text


# check_template


def test_check_template_returns_the_merge_tags_used_in_every_part() -> None:
    content = email(
        subject="Invoice for {{ customer_name }}",
        text="{{ amount_due }} is due on {{ due_date }}.",
        html="<p>{{ rep_name }}</p>",
    )

    tags = check_template(content, Channel.EMAIL)

    assert tags == frozenset({"customer_name", "amount_due", "due_date", "rep_name"})


def test_check_template_leaves_out_names_the_template_sets_itself() -> None:
    content = sms(
        "{% set greeting = 'Hi' %}{{ greeting }} {{ customer_first_name }}"
        "{% for line in lines %}{{ line }}{% endfor %}"
    )

    tags = check_template(content, Channel.SMS)

    assert tags == frozenset({"customer_first_name", "lines"})


def test_check_template_counts_an_optional_tag_as_used() -> None:
    content = sms("{{ ticket_number | default('') }}")

    tags = check_template(content, Channel.SMS)

    assert tags == frozenset({"ticket_number"})


def test_an_sms_with_a_subject_is_refused() -> None:
    content = TemplateContent(subject="Hi", text="Hello", html=None)

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert caught.value.field == "subject"
    assert "An SMS has no subject" in caught.value.message


def test_an_sms_with_an_html_part_is_refused() -> None:
    content = TemplateContent(subject=None, text="Hello", html="<p>Hello</p>")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert caught.value.field == "html"


def test_an_email_without_a_subject_is_refused() -> None:
    content = TemplateContent(subject=None, text="Hello", html=None)

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.EMAIL)

    assert caught.value.field == "subject"


def test_a_part_longer_than_the_source_limit_is_refused() -> None:
    content = email(html="x" * (MAX_TEMPLATE_SOURCE + 1))

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.EMAIL)

    assert caught.value.field == "html"
    assert f"the limit is {MAX_TEMPLATE_SOURCE:,}" in caught.value.message


@pytest.mark.parametrize("field", ["subject", "text", "html"])
def test_a_syntax_error_names_the_field_and_the_line(field: str) -> None:
    parts = {"subject": "Hi", "text": "Hi", "html": "<p>Hi</p>"}
    parts[field] = "Line one\nLine two {{ customer_name }\n"
    content = TemplateContent(**parts)

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.EMAIL)

    assert caught.value.field == field
    assert "syntax error on line 2" in caught.value.message


def test_an_unclosed_block_is_a_syntax_error() -> None:
    content = sms("{% if customer_name %}\nHello")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert caught.value.field == "text"
    assert "syntax error on line 2" in caught.value.message


def test_a_template_error_is_an_invalid_command() -> None:
    content = sms("{{ oops }")

    with pytest.raises(InvalidCommand) as caught:
        check_template(content, Channel.SMS)

    assert isinstance(caught.value, TemplateError)


# Merge tags


def test_a_missing_merge_tag_is_named_in_the_error() -> None:
    content = sms("Hi {{ customer_first_name }}, your ticket is {{ ticket_number }}.")

    with pytest.raises(MissingMergeTag) as caught:
        render(content, {"customer_first_name": "Ann"}, Channel.SMS)

    assert caught.value.tag == "ticket_number"
    assert caught.value.field == "text"
    assert "'ticket_number'" in caught.value.message


def test_a_missing_merge_tag_names_the_part_that_uses_it() -> None:
    content = email(subject="Hi", text="Hi", html="<p>{{ statement_period }}</p>")

    with pytest.raises(MissingMergeTag) as caught:
        render(content, {}, Channel.EMAIL)

    assert caught.value.field == "html"
    assert caught.value.tag == "statement_period"


def test_a_missing_merge_tag_in_the_subject_names_the_subject() -> None:
    content = email(subject="Ticket {{ ticket_number }}")

    with pytest.raises(MissingMergeTag) as caught:
        render(content, {}, Channel.EMAIL)

    assert caught.value.field == "subject"


def test_a_missing_merge_tag_is_an_error_even_inside_an_if() -> None:
    content = sms("{% if amount_due %}You owe {{ amount_due }}.{% endif %}")

    with pytest.raises(MissingMergeTag) as caught:
        render(content, {}, Channel.SMS)

    assert caught.value.tag == "amount_due"


def test_a_missing_merge_tag_is_an_error_when_looped_over() -> None:
    content = sms("{% for line in lines %}{{ line }}{% endfor %}")

    with pytest.raises(MissingMergeTag) as caught:
        render(content, {}, Channel.SMS)

    assert caught.value.tag == "lines"


def test_an_attribute_of_a_missing_merge_tag_names_the_tag() -> None:
    content = sms("{{ appointment_time.hour }}")

    with pytest.raises(MissingMergeTag) as caught:
        render(content, {}, Channel.SMS)

    assert caught.value.tag == "appointment_time"


def test_the_default_filter_supplies_a_value_for_an_optional_tag() -> None:
    template = "Hi {{ customer_first_name | default('there') }}!"

    text = render_sms(template)

    assert text == "Hi there!"


def test_the_default_filter_keeps_a_value_that_was_given() -> None:
    template = "Hi {{ customer_first_name | default('there') }}!"

    text = render_sms(template, customer_first_name="Ann")

    assert text == "Hi Ann!"


def test_is_defined_lets_a_template_test_for_an_optional_tag() -> None:
    template = (
        "{% if due_date is defined %}Due {{ due_date }}{% else %}No date{% endif %}"
    )

    without = render_sms(template)
    with_date = render_sms(template, due_date="May 1")

    assert without == "No date"
    assert with_date == "Due May 1"


def test_a_merge_value_of_none_counts_as_missing() -> None:
    template = "Hi {{ customer_first_name | default('there') }}!"

    text = render_sms(template, customer_first_name=None)

    assert text == "Hi there!"


def test_a_merge_value_that_looks_like_template_code_is_printed_as_is() -> None:
    value = "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}"

    text = render_sms("Note: {{ note }}", note=value)

    assert text == f"Note: {value}"


def test_every_standard_merge_tag_has_a_description() -> None:
    expected = {
        "customer_name",
        "customer_first_name",
        "customer_email",
        "customer_phone",
        "company_name",
        "rep_name",
        "rep_email",
    }

    described = {tag for tag, text in STANDARD_MERGE_TAGS.items() if text.strip()}

    assert described == expected


def test_every_standard_merge_tag_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")

    undocumented = [tag for tag in STANDARD_MERGE_TAGS if f"`{tag}`" not in docs]

    assert undocumented == []


# Escaping


def test_html_escapes_merge_values() -> None:
    content = email(html="<p>Dear {{ customer_name }},</p>")

    rendered = render(content, {"customer_name": "O'Brien & Sons"}, Channel.EMAIL)

    assert rendered.html == "<p>Dear O&#39;Brien &amp; Sons,</p>"


def test_html_escapes_markup_in_merge_values() -> None:
    content = email(html="<p>{{ customer_name }}</p>")

    rendered = render(
        content, {"customer_name": "<script>alert(1)</script>"}, Channel.EMAIL
    )

    assert rendered.html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_the_plain_text_part_never_escapes_merge_values() -> None:
    content = email(text="Dear {{ customer_name }},")

    rendered = render(content, {"customer_name": "O'Brien & Sons"}, Channel.EMAIL)

    assert rendered.text == "Dear O'Brien & Sons,"


def test_an_sms_never_escapes_merge_values() -> None:
    template = "Dear {{ customer_name }},"

    text = render_sms(template, customer_name="O'Brien & Sons")

    assert text == "Dear O'Brien & Sons,"


def test_the_subject_never_escapes_merge_values() -> None:
    content = email(subject="Welcome, {{ customer_name }}")

    rendered = render(content, {"customer_name": "O'Brien & Sons"}, Channel.EMAIL)

    assert rendered.subject == "Welcome, O'Brien & Sons"


@settings(database=None, max_examples=200)
@given(value=printable)
def test_text_rendering_reproduces_any_printable_merge_value_literally(
    value: str,
) -> None:
    template = "Dear {{ value }},"

    text = render_sms(template, value=value)

    assert text == f"Dear {value},"


@settings(database=None, max_examples=100)
@given(value=printable)
def test_html_rendering_escapes_any_printable_merge_value(value: str) -> None:
    content = email(html="<b>{{ value }}</b>")

    rendered = render(content, {"value": value}, Channel.EMAIL)

    assert rendered.html == f"<b>{markupsafe.escape(value)}</b>"


# Rendering


def test_render_returns_every_part_of_an_email() -> None:
    content = email(
        subject="Statement for {{ statement_period }}",
        text="Hi {{ customer_first_name }}, your statement is ready.",
        html="<p>Hi {{ customer_first_name }}</p>",
    )
    values = {"statement_period": "March 2025", "customer_first_name": "Ann"}

    rendered = render(content, values, Channel.EMAIL)

    assert rendered == RenderedContent(
        subject="Statement for March 2025",
        text="Hi Ann, your statement is ready.",
        html="<p>Hi Ann</p>",
    )


def test_an_email_without_an_html_part_renders_none_for_it() -> None:
    content = email(html=None)

    rendered = render(content, {}, Channel.EMAIL)

    assert rendered.html is None


def test_an_sms_renders_only_its_text() -> None:
    content = sms("Your code is {{ ticket_number }}.")

    rendered = render(content, {"ticket_number": 42}, Channel.SMS)

    assert rendered == RenderedContent(subject=None, text="Your code is 42.", html=None)


def test_a_block_tag_on_its_own_line_leaves_no_blank_line() -> None:
    template = (
        "Hi\n{% if amount_due is defined %}\nYou owe {{ amount_due }}.\n"
        "{% endif %}\nBye"
    )

    text = render_sms(template, amount_due="$5")

    assert text == "Hi\nYou owe $5.\nBye"


def test_a_running_total_in_a_namespace_works() -> None:
    template = (
        "{% set ns = namespace(total=0) %}"
        "{% for line in lines %}{% set ns.total = ns.total + line.amount %}"
        "{% endfor %}Total {{ ns.total }}"
    )

    text = render_sms(template, lines=[{"amount": 2}, {"amount": 3}])

    assert text == "Total 5"


def test_money_formatting_with_a_small_precision_works() -> None:
    template = "{{ '%.2f' | format(amount_due) }} / {{ '%.2f' % amount_due }}"

    text = render_sms(template, amount_due=12.5)

    assert text == "12.50 / 12.50"


def test_allowed_methods_can_be_called() -> None:
    template = (
        "{{ customer_name.upper() }} {{ appointment_time.strftime('%d %b') }} "
        "{% for k, v in extra.items() %}{{ k }}={{ v }}{% endfor %}"
    )
    values = {
        "customer_name": "ann",
        "appointment_time": datetime.datetime(2025, 3, 4, 15, 0),
        "extra": {"room": "B"},
    }

    text = render(sms(template), values, Channel.SMS).text

    assert text == "ANN 04 Mar room=B"


def test_a_loop_over_a_merge_value_renders_each_item() -> None:
    template = "{% for line in lines %}{{ loop.index }}. {{ line }}\n{% endfor %}"

    text = render_sms(template, lines=["Tyres", "Oil"])

    assert text == "1. Tyres\n2. Oil\n"


def test_an_expression_that_fails_is_reported_as_a_template_error() -> None:
    template = "{{ customer_name + 1 }}"

    with pytest.raises(TemplateError) as caught:
        render_sms(template, customer_name="Ann")

    assert caught.value.field == "text"
    assert "could not be rendered" in caught.value.message


# The subject


def test_the_subject_is_stripped_of_surrounding_whitespace() -> None:
    content = email(subject="  Hello {{ customer_first_name }}  ")

    rendered = render(content, {"customer_first_name": "Ann\n"}, Channel.EMAIL)

    assert rendered.subject == "Hello Ann"


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r", "\u2028"])
def test_a_line_break_in_the_rendered_subject_is_refused(line_break: str) -> None:
    content = email(subject="Hello {{ customer_name }} from us")
    values = {"customer_name": f"Ann{line_break}Bcc: victim@example.com"}

    with pytest.raises(TemplateError) as caught:
        render(content, values, Channel.EMAIL)

    assert caught.value.field == "subject"
    assert "one line" in caught.value.message


def test_a_line_break_written_into_the_subject_template_is_refused() -> None:
    content = email(subject="Hello\nthere")

    with pytest.raises(TemplateError) as caught:
        render(content, {}, Channel.EMAIL)

    assert caught.value.field == "subject"


def test_a_subject_over_the_limit_is_refused_with_its_length() -> None:
    content = email(subject="{{ customer_name }}")

    with pytest.raises(TemplateError) as caught:
        render(content, {"customer_name": "x" * 214}, Channel.EMAIL)

    assert caught.value.field == "subject"
    assert caught.value.message.startswith(
        "Subject is 214 characters; the limit is 200."
    )


def test_a_subject_of_exactly_the_limit_is_accepted() -> None:
    content = email(subject="{{ customer_name }}")

    rendered = render(content, {"customer_name": "x" * MAX_SUBJECT}, Channel.EMAIL)

    assert rendered.subject == "x" * MAX_SUBJECT


def test_a_subject_that_renders_empty_is_refused() -> None:
    content = email(subject="{{ customer_name | default('') }}  ")

    with pytest.raises(TemplateError) as caught:
        render(content, {}, Channel.EMAIL)

    assert caught.value.field == "subject"
    assert "empty" in caught.value.message


# Output size caps


def test_a_plain_text_part_over_the_output_cap_is_refused() -> None:
    content = email(text="{{ statement }}")

    with pytest.raises(TemplateError) as caught:
        render(content, {"statement": "x" * (MAX_RENDERED_TEXT + 1)}, Channel.EMAIL)

    assert caught.value.field == "text"
    assert f"more than {MAX_RENDERED_TEXT:,} characters" in caught.value.message


def test_an_html_part_over_the_output_cap_is_refused() -> None:
    content = email(html="{% for i in range(300) %}{{ block }}{% endfor %}")

    with pytest.raises(TemplateError) as caught:
        render(content, {"block": "x" * 1_000}, Channel.EMAIL)

    assert caught.value.field == "html"
    assert f"more than {MAX_RENDERED_HTML:,} characters" in caught.value.message


def test_rendering_stops_as_soon_as_the_output_cap_is_passed() -> None:
    class Chunk:
        printed = 0

        def __str__(self) -> str:
            Chunk.printed += 1
            return "x" * 1_000

    template = "{% for i in range(1000) %}{{ chunk }}{% endfor %}"

    with pytest.raises(TemplateError):
        render_sms(template, chunk=Chunk())

    assert Chunk.printed == MAX_RENDERED_TEXT // 1_000 + 1


def test_output_just_under_the_cap_is_accepted() -> None:
    template = "{{ statement }}"

    text = render_sms(template, statement="x" * MAX_RENDERED_TEXT)

    assert len(text) == MAX_RENDERED_TEXT


# Costly constructs


def test_a_range_within_the_limit_renders() -> None:
    template = "{{ range(1, 4) | join(',') }}"

    text = render_sms(template)

    assert text == "1,2,3"


def test_a_range_beyond_the_limit_is_refused_when_the_template_is_checked() -> None:
    content = sms(f"{{% for i in range({MAX_RANGE + 1}) %}}.{{% endfor %}}")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert caught.value.field == "text"
    assert "range()" in caught.value.message
    assert "line 1" in caught.value.message


def test_a_range_written_as_arithmetic_is_refused_when_checked() -> None:
    content = sms("{% for i in range(10 ** 9) %}.{% endfor %}")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert "range()" in caught.value.message


def test_a_range_sized_by_a_merge_value_is_refused_at_render() -> None:
    template = "{% for i in range(n) %}.{% endfor %}"

    with pytest.raises(TemplateError) as caught:
        render_sms(template, n=10**12)

    assert "range()" in caught.value.message


def test_repeating_text_into_a_huge_value_is_refused_when_checked() -> None:
    content = sms("{{ 'x' * 1000000000 }}")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert "1,000,000,000 characters" in caught.value.message


def test_repeating_a_merge_value_into_a_huge_value_is_refused_at_render() -> None:
    template = "{{ customer_name * times }}"

    with pytest.raises(TemplateError) as caught:
        render_sms(template, customer_name="Ann", times=10**9)

    assert "characters" in caught.value.message


def test_a_huge_power_is_refused_when_checked() -> None:
    content = sms("{{ 10 ** 100000 }}")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert "bits" in caught.value.message


def test_nested_loops_that_would_run_too_long_are_stopped() -> None:
    template = (
        "{% for a in range(1000) %}{% for b in range(1000) %}"
        "{% if a == b %}{% endif %}{% endfor %}{% endfor %}"
    )

    with pytest.raises(TemplateError) as caught:
        render_sms(template)

    assert "steps of work" in caught.value.message


def test_comparing_long_text_inside_loops_is_charged_by_its_length() -> None:
    template = (
        "{% for a in range(1000) %}{% for b in range(1000) %}"
        "{% if 'needle' in haystack %}{% endif %}{% endfor %}{% endfor %}"
    )

    with pytest.raises(TemplateError) as caught:
        render_sms(template, haystack="x" * 100_000)

    assert "steps of work" in caught.value.message


@pytest.mark.parametrize(
    "template",
    [
        "{{ note | replace('a', 'aaaaaaaaaa') | replace('a', 'aaaaaaaaaa')"
        " | replace('a', 'aaaaaaaaaa') | replace('a', 'aaaaaaaaaa')"
        " | replace('a', 'aaaaaaaaaa') | replace('a', 'aaaaaaaaaa') }}",
        "{{ note.replace('a', 'aaaaaaaaaa').replace('a', 'aaaaaaaaaa')"
        ".replace('a', 'aaaaaaaaaa').replace('a', 'aaaaaaaaaa')"
        ".replace('a', 'aaaaaaaaaa').replace('a', 'aaaaaaaaaa') }}",
    ],
)
def test_replace_that_would_multiply_text_is_refused(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_sms(template, note="aaaa")

    assert "with replace" in caught.value.message


def test_a_namespace_cannot_grow_a_value_past_the_limit_across_loop_turns() -> None:
    template = (
        "{% set ns = namespace(text='x') %}{% for i in range(64) %}"
        "{% set ns.text = ns.text ~ ns.text %}{% endfor %}{{ ns.text | length }}"
    )

    with pytest.raises(TemplateError) as caught:
        render_sms(template)

    assert "characters" in caught.value.message


@pytest.mark.parametrize(
    "template",
    ["{{ '%0999999999d' % 1 }}", "{{ '%0999999999d' | format(1) }}"],
)
def test_a_huge_format_width_is_refused(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_sms(template)

    assert "format width" in caught.value.message


def test_indenting_by_a_huge_width_is_refused() -> None:
    template = "{{ note | indent(1000000000) }}"

    with pytest.raises(TemplateError) as caught:
        render_sms(template, note="a\nb")

    assert "with indent" in caught.value.message


def test_joining_with_a_huge_separator_is_refused() -> None:
    template = "{{ range(1000) | join(separator) }}"

    with pytest.raises(TemplateError) as caught:
        render_sms(template, separator="x" * 10_000)

    assert "with join" in caught.value.message


def test_summing_anything_but_numbers_is_refused() -> None:
    template = "{{ lines | sum(start=[]) }}"

    with pytest.raises(TemplateError) as caught:
        render_sms(template, lines=[[1], [2]])

    assert "sum()" in caught.value.message


@pytest.mark.parametrize(
    "template",
    [
        "{% macro greet() %}Hi{% endmacro %}{{ greet() }}",
        "{% call greet() %}Hi{% endcall %}",
        "{% include 'footer.txt' %}",
        "{% import 'helpers.txt' as helpers %}",
        "{% from 'helpers.txt' import greet %}",
        "{% extends 'base.txt' %}",
        "{% block body %}Hi{% endblock %}",
    ],
)
def test_structural_tags_are_refused_when_checked(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(sms(template), Channel.SMS)

    assert "which templates may not use" in caught.value.message


def test_a_recursive_loop_is_refused_when_checked() -> None:
    content = sms("{% for item in items recursive %}{{ loop(item) }}{% endfor %}")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert "recursive loop" in caught.value.message


@pytest.mark.parametrize("name", ["center", "batch", "slice", "random"])
def test_filters_that_pad_split_or_shuffle_are_not_available(name: str) -> None:
    content = sms(f"{{{{ customer_name | {name}(3) }}}}")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert f"No filter named '{name}'" in caught.value.message


def test_an_expression_nested_too_deeply_is_refused() -> None:
    content = sms("{{ " + "(" * 2_000 + "1" + ")" * 2_000 + " }}")

    with pytest.raises(TemplateError) as caught:
        check_template(content, Channel.SMS)

    assert "nested too deeply" in caught.value.message


# The sandbox


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ customer_name.__class__.__base__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__['os'] }}",
        "{{ range.__globals__ }}",
        "{{ self.__dict__ }}",
        "{{ customer_name['__class__'] }}",
        "{{ customer_name._private }}",
    ],
)
def test_escape_attempts_are_refused_when_checked(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(sms(template), Channel.SMS)

    assert caught.value.field == "text"
    assert "uses something templates may not" in caught.value.message


@pytest.mark.parametrize(
    "template",
    [
        "{{ customer_name[key] }}",
        "{{ customer_name | attr(key) }}",
        "{{ '{0.__class__}'.format(customer_name) }}",
        "{{ '{0}'.format_map(extra) }}",
        "{{ customer_name.ljust(1000000000) }}",
        "{{ extra.pop('room') }}",
        "{{ extra.update(room='C') }}",
    ],
)
def test_escape_attempts_are_refused_at_render(template: str) -> None:
    values = {"customer_name": "Ann", "key": "__class__", "extra": {"room": "B"}}

    with pytest.raises(TemplateError) as caught:
        render(sms(template), values, Channel.SMS)

    assert caught.value.field == "text"
    assert "uses something templates may not" in caught.value.message


def test_a_refused_render_leaves_the_merge_values_unchanged() -> None:
    values = {"extra": {"room": "B"}}

    with pytest.raises(TemplateError):
        render(sms("{{ extra.pop('room') }}"), values, Channel.SMS)

    assert values == {"extra": {"room": "B"}}


# Messages


@pytest.mark.parametrize(
    ("content", "values", "channel"),
    [
        (sms("{{ oops }"), {}, Channel.SMS),
        (sms("{{ gone }}"), {}, Channel.SMS),
        (sms("{{ ''.__class__ }}"), {}, Channel.SMS),
        (sms("{{ range(100000) }}"), {}, Channel.SMS),
        (email(subject="{{ s }}"), {"s": "x" * 300}, Channel.EMAIL),
        (email(subject="{{ s }}"), {"s": "a\nb"}, Channel.EMAIL),
        (TemplateContent("Hi", "Hi", None), {}, Channel.SMS),
    ],
)
def test_error_messages_are_sentences(
    content: TemplateContent, values: dict[str, object], channel: Channel
) -> None:
    with pytest.raises(TemplateError) as caught:
        render(content, values, channel)

    message = caught.value.message
    assert message[0].isupper()
    assert message.endswith(".")
    assert ";" in message or ". " in message
