"""Text from runs (names, tag values, paths, messages, log lines) put on a page as text, never markup.

A run's name is its folder's name, so anyone who can create a folder under ``--runs`` chooses it;
its config, ``progress.json`` message and the launch log are as open. Widgets that take plain
strings (Bokeh ``Select`` options, button labels, Tabulator cells with the default formatter,
canvas titles and legends, hover fields without ``{safe}``) show them as text. The panes that
take markup do not: an HTML pane inserts its string as HTML, and a Markdown pane (``Alert`` too)
passes raw HTML through and reads ``*``, `````, ``$`` and ``[..](..)`` as formatting. Every
such string goes through one of the functions here:

- :func:`html_text` for an HTML pane: ``& < > " '`` become entities;
- :func:`markdown_text` for a Markdown pane: every ASCII punctuation character is
  backslash-escaped, which CommonMark reads as that literal character (so ``\\<img`` is the
  text ``<img``, not a tag, and ``\\$`` starts no formula);
- :func:`isolated_name` wraps a name escaped for an HTML pane in ``<bdi>``, so a right-to-left
  override inside the name cannot reverse the text after it.
"""

from __future__ import annotations

import html
import string

# CommonMark: "Any ASCII punctuation character may be backslash-escaped" (and then is literal).
_MARKDOWN_ESCAPES = str.maketrans({c: "\\" + c for c in string.punctuation})


def html_text(value: object) -> str:
    """``str(value)`` as HTML that displays exactly that text."""
    return html.escape(str(value), quote=True)


def markdown_text(value: object) -> str:
    """``str(value)`` as Markdown that displays exactly that text (no HTML, links, emphasis,
    code or maths); line breaks stay line breaks."""
    return str(value).translate(_MARKDOWN_ESCAPES)


def isolated_name(value: object) -> str:
    """A name for an HTML pane, escaped and inside ``<bdi>``: shown as text, and its
    bidirectional controls (U+202E ...) end with it."""
    return f"<bdi>{html_text(value)}</bdi>"
