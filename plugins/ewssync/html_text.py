"""inscriptis' text for the plain HTML Outlook writes, without inscriptis' per-element objects.

transform.html_to_text renders bodies with inscriptis (strict CSS profile, no links, images
or anchors). Most bodies are paragraphs, divs, spans and line breaks; for those, ``render``
gives exactly inscriptis' text (the same canvas rules: block margins, whitespace collapsing,
``display: none`` subtrees, its second unescape of each text run) in a fifth of the time.
Anything else (lists, tables, <pre>, <q>, a ``style``/``align``/``valign`` attribute, which
inscriptis interprets, processing instructions, an XML declaration, unparsable input) gives
None: the caller uses inscriptis. tests/unit/test_html_text.py compares both on generated HTML.
"""

from __future__ import annotations

import functools
from html import unescape

# Tags inscriptis renders by its own handlers or with indentation, bullets, affixes or
# preformatted whitespace (strict profile): not rendered here.
_SPECIAL_TAGS = frozenset(
    {"table", "tr", "td", "th", "ul", "ol", "li", "q", "pre", "xmp", "listing", "plaintext"}
)
# Attributes inscriptis turns into layout (inscriptis.model.attribute.DEFAULT_ATTRIBUTE_MAP).
_LAYOUT_ATTRIBUTES = ("style", "align", "valign")
_INLINE, _BLOCK, _NONE = 0, 1, 2


@functools.cache
def _layouts() -> dict[str, tuple[int, int, int]]:
    """(display, margin before, margin after) per tag of the strict profile rendered here."""
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.html_properties import Display, WhiteSpace

    displays = {Display.inline: _INLINE, Display.block: _BLOCK, Display.none: _NONE}
    layouts = {}
    for tag, element in CSS_PROFILES["strict"].items():
        plain = (
            element.display in displays
            and not element.padding_inline
            and not element.list_bullet
            and not element.prefix
            and not element.suffix
            and element.whitespace in (None, WhiteSpace.normal)
        )
        if plain and tag not in _SPECIAL_TAGS:
            layouts[tag] = (displays[element.display], element.margin_before, element.margin_after)
    return layouts


class _Unsupported(Exception):
    """The body uses something only inscriptis renders."""


class _Canvas:
    """inscriptis.model.canvas.Canvas and Block, for unindented, normal-whitespace text."""

    __slots__ = ("blocks", "content", "collapsable", "margin")

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.content = ""
        self.collapsable = True
        self.margin = 1000

    def write(self, text: str) -> None:  # Block.merge_normal_text
        words = text.split()
        if words:
            lead = " " if text[0].isspace() and not self.collapsable else ""
            tail = " " if text[-1].isspace() else ""
            normalized = lead + " ".join(words) + tail
            self.collapsable = bool(tail)
        elif text and not self.collapsable:
            normalized = " "
            self.collapsable = True
        else:
            return
        self.content += unescape(normalized)

    def flush_inline(self) -> bool:
        # inscriptis reads Block.content (which drops one collapsable trailing space) twice
        if self.collapsable and self.content.endswith(" "):
            self.content = self.content[:-1]
        if not self.content:
            return False
        if self.collapsable and self.content.endswith(" "):
            self.content = self.content[:-1]
        self.blocks.append(self.content)
        self.content, self.collapsable, self.margin = "", True, 0
        return True

    def open_block(self, margin: int) -> None:
        self.flush_inline()
        if margin > self.margin:
            self.blocks.append("\n" * (margin - self.margin - 1))
            self.margin = margin

    def close_block(self, margin_after: int) -> None:
        self.flush_inline()
        if margin_after > self.margin:
            self.blocks.append("\n" * (margin_after - self.margin - 1))
            self.margin = margin_after

    def write_newline(self) -> None:  # <br>
        if not self.flush_inline():
            self.blocks.append("")
            self.content, self.collapsable = "", True


def render(html: str) -> str | None:
    """inscriptis' get_text(html) with transform's configuration, or None when the body uses
    what only inscriptis renders (then call inscriptis)."""
    from lxml.etree import Comment, ParserError
    from lxml.html import document_fromstring

    content = html.strip()
    if not content:
        return ""
    if content.startswith("<?xml "):
        return None
    try:
        tree = document_fromstring(content)
    except (ParserError, ValueError):
        return None
    canvas = _Canvas()
    try:
        # the root's parent is inscriptis' <body> of the strict profile: inline, no margins
        _walk(tree, (_INLINE, 0, 0), canvas, _layouts(), Comment)
    except _Unsupported:
        return None
    canvas.flush_inline()
    return "\n".join(canvas.blocks)


def _walk(node, parent: tuple[int, int, int], canvas: _Canvas, layouts, comment) -> None:
    """HtmlDocumentState/Inscriptis._parse_html_tree for one element and its subtree."""
    tag = node.tag
    if not isinstance(tag, str):
        if tag is comment:
            if node.tail:  # written even inside display:none, as inscriptis does
                canvas.write(node.tail)
            return
        raise _Unsupported  # processing instructions, entities
    if tag in _SPECIAL_TAGS:
        raise _Unsupported
    attributes = node.attrib
    if attributes and any(name in attributes for name in _LAYOUT_ATTRIBUTES):
        raise _Unsupported
    display, margin_before, margin_after = layouts.get(tag, (_INLINE, 0, 0))
    if parent[0] == _NONE:
        display = _NONE
    if tag == "br":
        canvas.write_newline()  # inscriptis writes it even inside display:none
    if display == _BLOCK:
        # a block in a block starts after the parent's bottom margin (previous_margin_after)
        previous = parent[2] if parent[0] == _BLOCK else 0
        canvas.open_block(max(previous, margin_before))
    element = (display, margin_before, margin_after)
    if node.text and display != _NONE:
        canvas.write(node.text)
    for child in node:
        _walk(child, element, canvas, layouts, comment)
    if display == _BLOCK:
        canvas.close_block(margin_after)
    if node.tail and parent[0] != _NONE:
        canvas.write(node.tail)
