"""lab.text: hostile run names, messages and paths reach HTML and Markdown panes as text only.

Each string is put through the helper, rendered by Panel's own pane (Markdown by its markdown-it
pipeline), and the HTML the browser would receive is parsed: the text must be exactly the input
and the only elements the ones the caller wrote.
"""

from __future__ import annotations

import panel as pn
import pytest

from lab.text import html_text, isolated_name, markdown_text
from tests.lab.rendered import rendered

HOSTILE = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=1</script>",
    "\"quote'",
    "<b>bold</b>&amp;",
    "abc\u202edef.npz",  # right-to-left override
    "tab\there\x1bescape",
    "[link](javascript:alert(1)) *em* _u_ `code` $x^2$ $$y$$ :smile: # not a heading",
    "1. not a list\n- nor this\n<div onclick=x>",
    "&lt;already&gt; &#60;escaped",
    "back\\slash \\<img src=x>",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_html_text_is_shown_verbatim_with_no_elements(text):
    shown, tags = rendered(pn.pane.HTML(f"<p>{html_text(text)}</p>"))
    assert shown == text
    assert [tag for tag, _ in tags] == ["p"]


@pytest.mark.parametrize("text", HOSTILE)
def test_isolated_name_is_one_bdi_holding_the_text(text):
    shown, tags = rendered(pn.pane.HTML(f"runs: {isolated_name(text)}, b"))
    assert shown == f"runs: {text}, b"
    assert tags == [("bdi", {})]


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_text_is_shown_verbatim_with_no_elements(text):
    shown, tags = rendered(pn.pane.Markdown(f"Not launched: {markdown_text(text)}"))
    # One paragraph; markdown-it ends it with a newline and joins lines with one.
    assert shown.strip("\n") == f"Not launched: {text}"
    assert [tag for tag, _ in tags] == ["p"]


def test_the_escapes_are_needed():
    """Unescaped, the same strings do become elements: the tests above can fail."""
    _, tags = rendered(pn.pane.HTML(HOSTILE[0]))
    assert ("img", {"src": "x", "onerror": "window.__xss=1"}) in tags
    _, tags = rendered(pn.pane.Markdown(f"Not launched: {HOSTILE[0]} *em*"))
    assert {"img", "em"} <= {tag for tag, _ in tags}
