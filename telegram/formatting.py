"""Reply text → Telegram messages (SPEC §22): Markdown rendered to Telegram HTML with
escaping, and long replies split into parts of at most 4096 characters on paragraph, then
line, then word boundaries.

A converter of our own rather than a Markdown library: Telegram accepts only a handful of
tags (b, i, s, u, tg-spoiler, a, code, pre, blockquote) and refuses anything else, so a
general renderer (tables, images, lists as <ul>) would need a second pass to strip what it
made. Every tag here wraps a recursive render of its content, so the output is always
well-formed; a marker that does not close stays literal text (escaped).

Each part keeps its source text too: when Telegram still refuses the entities, the sender
resends that part as plain text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

MESSAGE_LIMIT = 4096
MARKDOWN, HTML, PLAIN = "markdown", "html", "plain"
FORMATS = (MARKDOWN, HTML, PLAIN)
LINK_SCHEMES = ("http://", "https://", "tg://", "mailto:")
FENCE = re.compile(r"^\s*```\s*([\w+#.-]*)\s*$")


@dataclass(frozen=True)
class Part:
    text: str  # what is sent
    parse_mode: str  # "HTML" or "" (plain)
    plain_text: str  # the fallback when Telegram refuses the entities


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Chunks of at most ``limit`` characters, cut at a blank line, else a line break, else a
    space, within the second half of the window, else hard at ``limit``. The separator at a
    cut is dropped; nothing else is lost."""
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[: limit + 1]  # a separator right after the limit still counts
        for separator in ("\n\n", "\n", " "):
            cut = window.rfind(separator, 0, limit + 1)
            if cut >= limit // 2:
                chunks.append(rest[:cut])
                rest = rest[cut + len(separator) :]
                break
        else:
            chunks.append(rest[:limit])
            rest = rest[limit:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def _balance_fences(chunks: list[str]) -> list[str]:
    """A code block cut in two is closed at the end of one chunk and reopened (same
    language) at the start of the next, so each part renders on its own."""
    balanced = []
    carry = None  # the opening fence line of a block left open by the previous chunk
    for chunk in chunks:
        if carry is not None:
            chunk = f"{carry}\n{chunk}"
        open_fence = None
        for line in chunk.split("\n"):
            match = FENCE.match(line)
            if match:
                open_fence = None if open_fence is not None else f"```{match.group(1)}"
        if open_fence is not None:
            chunk = f"{chunk}\n```"
        carry = open_fence
        balanced.append(chunk)
    return balanced


_INLINE = re.compile(
    r"(?P<code>`(?P<code_in>[^`\n]+)`)"
    r"|(?P<link>\[(?P<link_text>[^\]\n]+)\]\((?P<link_url>[^)\s]+)\))"
    r"|(?P<bold>\*\*(?P<bold_in>(?!\s).+?)\*\*)"
    r"|(?P<bold2>(?<!\w)__(?P<bold2_in>(?!\s).+?)__(?!\w))"
    r"|(?P<strike>~~(?P<strike_in>(?!\s).+?)~~)"
    r"|(?P<spoiler>\|\|(?P<spoiler_in>(?!\s).+?)\|\|)"
    r"|(?P<italic>(?<!\w)\*(?P<italic_in>(?![\s*]).+?)(?<!\s)\*)"
    r"|(?P<italic2>(?<!\w)_(?P<italic2_in>(?![\s_]).+?)(?<!\s)_(?!\w))"
)
_WRAP = {
    "bold": "b",
    "bold2": "b",
    "strike": "s",
    "spoiler": "tg-spoiler",
    "italic": "i",
    "italic2": "i",
}


def render_inline(text: str) -> str:
    """Inline Markdown → Telegram HTML; nested emphasis renders recursively."""
    out = []
    position = 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[position : match.start()], quote=False))
        position = match.end()
        if match.group("code") is not None:
            out.append(f"<code>{html.escape(match.group('code_in'), quote=False)}</code>")
        elif match.group("link") is not None:
            url = match.group("link_url")
            label = render_inline(match.group("link_text"))
            if url.lower().startswith(LINK_SCHEMES):
                out.append(f'<a href="{html.escape(url, quote=True)}">{label}</a>')
            else:  # javascript: and friends stay text
                out.append(html.escape(match.group(0), quote=False))
        else:
            name = next(name for name in _WRAP if match.group(name) is not None)
            tag = _WRAP[name]
            out.append(f"<{tag}>{render_inline(match.group(f'{name}_in'))}</{tag}>")
    out.append(html.escape(text[position:], quote=False))
    return "".join(out)


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")


def render_markdown(text: str) -> str:
    """Markdown (the subset chat models write) → Telegram HTML."""
    out: list[str] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence:
            body = []
            index += 1
            while index < len(lines) and not FENCE.match(lines[index]):
                body.append(lines[index])
                index += 1
            index += 1  # the closing fence (or the end of the text)
            code = html.escape("\n".join(body), quote=False)
            language = fence.group(1)
            attribute = f' class="language-{html.escape(language)}"' if language else ""
            out.append(f"<pre><code{attribute}>{code}</code></pre>")
            continue
        if _QUOTE.match(line):
            quoted = []
            while index < len(lines) and _QUOTE.match(lines[index]):
                quoted.append(render_inline(_QUOTE.match(lines[index]).group(1)))
                index += 1
            out.append("<blockquote>" + "\n".join(quoted) + "</blockquote>")
            continue
        heading = _HEADING.match(line)
        bullet = _BULLET.match(line)
        if heading:
            out.append(f"<b>{render_inline(heading.group(1))}</b>")
        elif bullet and not re.fullmatch(r"\s*([-*_])(\s*\1){2,}\s*", line):
            out.append(f"{bullet.group(1)}• {render_inline(bullet.group(2))}")
        else:
            out.append(render_inline(line))
        index += 1
    return "\n".join(out)


def strip_html(text: str) -> str:
    """Telegram HTML → the plain text a reader would see."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _fit(source: str, render, limit: int) -> list[Part]:
    rendered = render(source)
    if len(rendered) <= limit or len(source) <= 1:
        return [Part(rendered, "HTML", source)]
    # Escaping and tags made it longer than the source: cut the source finer, in proportion.
    smaller = max(64, len(source) * limit // len(rendered) - 16)
    if smaller >= len(source):
        smaller = len(source) // 2
    parts: list[Part] = []
    for chunk in _balance_fences(split_text(source, smaller)):
        parts.extend(_fit(chunk, render, limit))
    return parts


def reply_parts(text: str, text_format: str = MARKDOWN, limit: int = MESSAGE_LIMIT) -> list[Part]:
    """The Telegram messages for one reply, in order; plain text when rendering fails."""
    text = text or ""
    if not text.strip():
        return []
    if text_format == PLAIN:
        return [Part(chunk, "", chunk) for chunk in split_text(text, limit)]
    if text_format == HTML:
        return [Part(chunk, "HTML", strip_html(chunk)) for chunk in split_text(text, limit)]
    try:
        parts: list[Part] = []
        for chunk in _balance_fences(split_text(text, limit)):
            parts.extend(_fit(chunk, render_markdown, limit))
        return parts
    except Exception:  # a renderer bug must never lose the reply: send it as written
        return [Part(chunk, "", chunk) for chunk in split_text(text, limit)]
