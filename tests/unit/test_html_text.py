"""html_text.render gives exactly inscriptis' text, or None (then transform uses inscriptis)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inscriptis import get_text

from ewssync import html_text
from ewssync.transform import _html_config, _tidy, html_to_text

REALISTIC = Path(__file__).resolve().parents[1] / "ewssim" / "fixtures" / "realistic.json"


def inscriptis_text(html: str) -> str:
    return get_text(html, _html_config())


OUTLOOK_BODIES = [
    "<html><body><p class=MsoNormal>Auftrag 1944: Montage.<o:p></o:p></p>"
    "<p class=MsoNormal>Kunde&nbsp;K1944, Telefon 030 1944</p></body></html>",
    '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head><meta charset="utf-8">'
    "<style><!-- p.MsoNormal {margin:0cm;} --></style><!--[if gte mso 9]><xml><o:shapedefaults/>"
    "</xml><![endif]--></head><body lang=DE><div class=WordSection1><p class=MsoNormal><span lang=EN-US>"
    "Hi Anna,<o:p></o:p></span></p><p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>"
    "bring the <b>ladder</b> &amp; the key.<br>Thanks<br><br>Tom</p></div></body></html>",
    "<div>one</div><div>two<div>three</div></div>  tail <span> spaced   out </span>",
    "<p>a</p><p></p><p>b<br></p>text after<h1>Title</h1><blockquote>quote</blockquote>",
    "plain text &amp;lt;b&amp;gt; not a tag",
    "<h2>Title<div>body</div>after</h2><div>x<p>para</p>y</div><p>z<div>w</div></p>",
]


@pytest.mark.parametrize("html", OUTLOOK_BODIES)
def test_outlook_bodies_render_here_exactly_as_inscriptis(html):
    assert html_text.render(html) is not None
    assert html_text.render(html) == inscriptis_text(html)


@pytest.mark.parametrize(
    "html",
    [
        "<ul><li>one</li><li>two</li></ul>",
        "<table><tr><td>a</td><td>b</td></tr></table>",
        "<pre>  keep   spaces </pre>",
        '<p style="display:none">hidden</p>',
        '<div align="right">x</div>',
        "<q>quoted</q>",
        '<?xml version="1.0"?><html><body>x</body></html>',
    ],
)
def test_what_only_inscriptis_renders_is_left_to_it(html):
    assert html_text.render(html) is None
    assert html_to_text(html) == _tidy(inscriptis_text(html))  # transform still renders it


def test_the_realistic_mailboxs_bodies_render_as_inscriptis():
    items = json.loads(REALISTIC.read_text(encoding="utf-8"))["mailboxes"][0]["items"]
    bodies = [i["body"] for i in items if str(i.get("body_type", "")).upper() == "HTML"]
    rendered = [(html, html_text.render(html)) for html in bodies]
    assert bodies and sum(text is not None for _, text in rendered) >= len(bodies) // 2
    for html, text in rendered:
        if text is not None:
            assert text == inscriptis_text(html)


# Mostly what render takes (so most examples compare texts), some of what it leaves alone.
_TAGS = ["p", "div", "span", "b", "font", "o:p", "h2", "blockquote", "a", "head", "style",
         "title", "body", "img"] * 3 + ["ul", "li", "table", "td", "pre", "q"]  # fmt: skip
_ATTRIBUTES = ["", ' class="MsoNormal"', " lang=DE", ' href="x"'] * 4 + [
    ' style="margin:0"', ' align="left"']  # fmt: skip
_TEXT = st.lists(
    st.sampled_from(
        [
            "x",
            "yz",
            " ",
            "  ",
            "\n",
            "\t",
            "\u00a0",
            "&nbsp;",
            "&amp;",
            "&amp;lt;",
            "&amp;#32;",
            "é",
            "<br>",
            "<!-- c -->",
            "<!--[if mso]>m<![endif]-->",
        ]
    ),  # fmt: skip
    max_size=6,
).map("".join)


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda tag, attribute, text, inner, tail: f"<{tag}{attribute}>{text}{inner}</{tag}>{tail}",
        st.sampled_from(_TAGS),
        st.sampled_from(_ATTRIBUTES),
        _TEXT,
        children,
        _TEXT,
    )


_HTML = st.recursive(
    _TEXT, lambda children: st.lists(_element(children), max_size=4).map("".join), max_leaves=12
)


@given(html=_HTML)
@settings(max_examples=1500, deadline=None)
def test_generated_html_renders_as_inscriptis_or_is_left_to_it(html):
    text = html_text.render(html)
    if text is not None:
        assert text == inscriptis_text(html)
