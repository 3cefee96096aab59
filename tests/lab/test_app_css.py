"""The served page asks this server, never a CDN, for Panel's stylesheets: also those of models
made before the page is rendered (lab.app.keep_panel_css_local)."""

from __future__ import annotations

import panel as pn
from bokeh.document import Document
from bokeh.models import ImportedStyleSheet
from panel.io.state import set_curdoc

from lab.app import create_app


def stylesheet_urls(root) -> set[str]:
    return {str(sheet.url) for sheet in root.select({"type": ImportedStyleSheet})}


def test_models_made_before_the_page_is_rendered_load_css_from_this_server(tmp_path):
    doc = Document()  # a new session's document: its page not rendered yet
    with set_curdoc(doc):
        template = create_app(tmp_path, poll_ms=60_000)
        # What a poll that fires before the page is rendered would add, and the app's tabs.
        roots = [pn.Column(pn.pane.Markdown("a new run"), pn.widgets.Button(name="go")).get_root(doc),
                 template.main[0].get_root(doc)]
    urls = set().union(*(stylesheet_urls(root) for root in roots))
    assert any("css/markdown.css" in u for u in urls) and any("css/loading.css" in u for u in urls), urls
    outside = sorted(u for u in urls if u.startswith(("http:", "https:", "//")))
    assert outside == [], outside
    assert all(u.startswith("static/extensions/panel/") for u in urls), urls
