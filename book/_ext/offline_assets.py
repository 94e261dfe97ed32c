"""Keep the built book free of requests to outside servers.

jupyter-book 1.x always loads sphinx-thebe, which puts the address of the thebe bundle on a CDN
into every page (fetched only when a thebe button is pressed; this book has none). This
extension drops those scripts, so no page names an outside script at all. MathJax is served
locally (see ``mathjax_path`` in ``_config.yml``); ``tests/test_book.py`` checks the result.
"""

from __future__ import annotations

from typing import Any


def _is_remote_loader(script: Any) -> bool:
    filename = str(getattr(script, "filename", "") or "")
    body = str(getattr(script, "attributes", {}).get("body", "") or "")
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def _drop_remote_loaders(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts:
        scripts[:] = [s for s in scripts if not _is_remote_loader(s)]


def setup(app) -> dict[str, Any]:
    # Run after every other html-page-context handler.
    app.connect("html-page-context", _drop_remote_loaders, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
