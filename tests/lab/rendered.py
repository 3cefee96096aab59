"""What a Panel HTML or Markdown pane puts on the page: its elements and its text, read from the
HTML that Panel sends to the browser (Markdown rendered by Panel's own pipeline)."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import panel as pn


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data


def rendered(pane: pn.pane.HTML | pn.pane.Markdown) -> tuple[str, list[tuple[str, dict]]]:
    """(text, [(tag, attributes), ...]) of the HTML the browser receives for ``pane``."""
    sent = pane._transform_object(pane.object)["object"]  # Panel escapes; the browser unescapes
    parser = _Elements()
    parser.feed(html.unescape(sent))
    parser.close()
    return parser.text, parser.tags
