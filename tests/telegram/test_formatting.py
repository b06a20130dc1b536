"""Markdown → Telegram HTML and the 4096-character split (SPEC §22)."""

from __future__ import annotations

import re

import pytest

from telegram import formatting
from telegram.formatting import render_markdown, reply_parts, split_text

ALLOWED_TAGS = {"b", "i", "s", "u", "tg-spoiler", "a", "code", "pre", "blockquote"}


def balanced(html: str) -> bool:
    """Every tag closed in order, and only tags Telegram accepts."""
    stack = []
    for closing, name in re.findall(r"<(/?)([a-z-]+)[^>]*>", html):
        if name not in ALLOWED_TAGS:
            return False
        if closing:
            if not stack or stack.pop() != name:
                return False
        else:
            stack.append(name)
    return not stack


@pytest.mark.parametrize(
    "source, expected",
    [
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("**bold** and *it* and _it2_ ~~gone~~ ||secret||",
         "<b>bold</b> and <i>it</i> and <i>it2</i> <s>gone</s> <tg-spoiler>secret</tg-spoiler>"),
        ("**bold *nested* <x>**", "<b>bold <i>nested</i> &lt;x&gt;</b>"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
        ("`a <b> **not bold**`", "<code>a &lt;b&gt; **not bold**</code>"),
        ("[site](https://e.com/?a=1&b=\"2\")", '<a href="https://e.com/?a=1&amp;b=&quot;2&quot;">site</a>'),
        ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
        ("**unclosed and <tag>", "**unclosed and &lt;tag&gt;"),
        ("# Title <1>", "<b>Title &lt;1&gt;</b>"),
        ("- one\n- **two**", "• one\n• <b>two</b>"),
        ("> quoted *x*\n> more", "<blockquote>quoted <i>x</i>\nmore</blockquote>"),
        ("```python\nif a < b:\n    **x**\n```",
         '<pre><code class="language-python">if a &lt; b:\n    **x**</code></pre>'),
        ("```\nnever closed <", "<pre><code>never closed &lt;</code></pre>"),
    ],
)  # fmt: skip
def test_markdown_renders_to_telegram_html(source, expected):
    assert render_markdown(source) == expected
    assert balanced(render_markdown(source))


def test_split_prefers_paragraphs_then_lines_then_words():
    paragraph = "p" * 3000 + "\n\n" + "q" * 2000
    assert split_text(paragraph) == ["p" * 3000, "q" * 2000]
    lines = "a" * 3000 + "\n" + "b" * 2000
    assert split_text(lines) == ["a" * 3000, "b" * 2000]
    words = ("word " * 2000).strip()
    parts = split_text(words)
    assert all(len(p) <= 4096 for p in parts) and all(not p.endswith("wor") for p in parts)
    assert " ".join(parts) == words
    solid = "z" * 9000
    assert split_text(solid) == ["z" * 4096, "z" * 4096, "z" * 808]


def test_a_code_block_cut_by_the_limit_is_closed_and_reopened_in_each_part():
    code = "\n".join(f"line {i} < {i + 1}" for i in range(800))
    source = f"Intro **text**\n\n```js\n{code}\n```\nAfter."
    parts = reply_parts(source)
    assert len(parts) >= 3
    for part in parts:
        assert len(part.text) <= 4096 and part.parse_mode == "HTML"
        assert balanced(part.text), part.text[:80]
    middle = parts[1].text
    assert middle.startswith('<pre><code class="language-js">') and middle.endswith("</code></pre>")
    shown = "".join(formatting.strip_html(p.text) for p in parts)
    assert all(f"line {i} < {i + 1}" in shown for i in range(800))  # nothing lost


def test_escaping_that_grows_a_part_past_the_limit_splits_it_again():
    source = ("<&> " * 2250).strip()
    parts = reply_parts(source)
    assert len(parts) > 2 and all(len(p.text) <= 4096 for p in parts)
    assert " ".join(formatting.strip_html(p.text) for p in parts) == source


def test_plain_and_html_formats_and_the_fallback_text():
    assert [p.text for p in reply_parts("*not markdown*", "plain")] == ["*not markdown*"]
    [part] = reply_parts("<b>ok</b> &amp;", "html")
    assert part.parse_mode == "HTML" and part.plain_text == "ok &"
    [part] = reply_parts("**x** <y>")
    assert part.plain_text == "**x** <y>"  # what is sent if Telegram refuses the entities
    assert reply_parts("   ") == []


def test_a_renderer_failure_sends_the_text_as_written(monkeypatch):
    def broken(text):
        raise RuntimeError("bug")

    monkeypatch.setattr(formatting, "render_markdown", broken)
    [part] = reply_parts("**x** <y>")
    assert part.text == "**x** <y>" and part.parse_mode == ""
