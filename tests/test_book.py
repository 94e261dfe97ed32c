"""The Jupyter Book builds with warnings as errors and needs no outside server to be read.

The book is built once per session into a temporary folder (``--path-output``), so the
working tree is left as it is. The offline checks read every built page:

- no ``<script src>``, ``<link href>`` (stylesheets, preloads, icons, fonts), ``<img>``,
  ``<iframe>``, ``<source>``, ``<video>``, ``<audio>``, ``<object>`` or ``<embed>`` points to
  another server (plain ``<a href>`` hyperlinks are allowed: they load nothing);
- no inline ``<script>`` or ``<style>`` names an outside address (analytics snippets, the
  thebe loader);
- no built stylesheet imports a font or stylesheet from another server, and no script outside
  MathJax names a known CDN or analytics host;
- MathJax 3 is the copy installed by ``make mathjax`` and lies inside the build.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = REPO_ROOT / "book"
MATHJAX_SRC = BOOK_DIR / "_extra" / "_static" / "mathjax" / "tex-chtml.js"
BUILD_TIMEOUT_S = 180
CHAPTERS = [
    "notebooks/01_pcp_activation",
    "notebooks/02_architecture",
    "notebooks/03_data",
    "notebooks/04_results",
    "notebooks/05_reproducibility",
]
# Hosts that a page must never contact: CDNs, web fonts, analytics, notebook launchers.
FORBIDDEN_HOSTS = (
    "cdn.jsdelivr.net",
    "unpkg.com",
    "cdnjs.cloudflare.com",
    "fonts.googleapis.com",
    "fonts.gstatic.com",
    "googletagmanager.com",
    "google-analytics.com",
    "plausible.io",
    "mybinder.org",
    "colab.research.google.com",
    "deepnote.com",
    "hypothes.is",
    "utteranc.es",
)
# Tag attributes that make a browser fetch something when the page opens.
FETCHING_ATTRS = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "object": ("data",),
    "embed": ("src",),
    "input": ("src",),
}
# Navigation-only <link rel=...> values; the browser loads nothing for them.
NAV_LINK_RELS = {"index", "search", "next", "prev", "canonical", "author", "license", "help"}
URL_RE = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'<>)]*""")
XML_NAMESPACES = ("http://www.w3.org/",)

pytestmark = pytest.mark.book


def _is_remote(url: str) -> bool:
    url = url.strip()
    return url.startswith("//") or urlsplit(url).scheme not in ("", "data", "blob", "file")


class _PageScan(html.parser.HTMLParser):
    """Collects fetching references, inline script/style bodies and MathJax script sources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetches: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.inline: list[str] = []
        self.style_attrs: list[str] = []
        self.links: list[tuple[str, str]] = []  # (rel, href) of <link>
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "link":
            rels = set(a.get("rel", "").lower().split())
            self.links.append((" ".join(sorted(rels)), a.get("href", "")))
            if rels and rels <= NAV_LINK_RELS:
                return
        for attr in FETCHING_ATTRS.get(tag, ()):
            if a.get(attr):
                for part in a[attr].split(","):  # srcset: "url 1x, url 2x"
                    url = part.strip().split(" ")[0]
                    if url:
                        self.fetches.append((tag, attr, url))
        if "style" in a:
            self.style_attrs.append(a["style"])
        if tag in ("script", "style") and not a.get("src"):
            self._in = tag
            self.inline.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.inline[-1] += data


def _scan(page: Path) -> _PageScan:
    scan = _PageScan()
    scan.feed(page.read_text(encoding="utf-8"))
    return scan


def _outside_urls(text: str) -> list[str]:
    return [u for u in URL_RE.findall(text) if not u.startswith(XML_NAMESPACES)]


def _jupyter_book_exe() -> str:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.exists():
        return str(exe)
    found = shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed in this environment; run `make venv`")
    return found


@pytest.fixture(scope="session")
def built_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the book once with `-W` (warnings are errors) into a temporary folder."""
    if not MATHJAX_SRC.is_file():
        pytest.fail(f"MathJax is missing at {MATHJAX_SRC}; run `make mathjax` (npm) first")
    out = tmp_path_factory.mktemp("book")
    cmd = [
        _jupyter_book_exe(), "build", str(BOOK_DIR),
        "-W", "--keep-going", "--path-output", str(out),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"jupyter-book build took more than {BUILD_TIMEOUT_S} s")
    elapsed = time.monotonic() - start
    log = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"book build failed (rc={proc.returncode}):\n{log}"
    html_dir = out / "_build" / "html"
    assert (html_dir / "intro.html").is_file(), f"no intro.html after the build:\n{log}"
    print(f"book built in {elapsed:.1f} s")
    return html_dir


@pytest.fixture(scope="session")
def pages(built_html: Path) -> list[Path]:
    # _static/ holds theme template macros (not pages); _sources/ holds copies of the sources.
    found = sorted(
        p for p in built_html.rglob("*.html")
        if p.relative_to(built_html).parts[0] not in ("_static", "_sources")
    )
    assert found, "the build produced no HTML page"
    return found


def test_toc_lists_the_chapters_in_order() -> None:
    import yaml

    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert toc["root"] == "intro"
    assert [c["file"] for c in toc["chapters"]] == CHAPTERS
    for link, target in [("_config.yml", "../_config.yml"), ("_toc.yml", "../_toc.yml"),
                         ("notebooks", "../notebooks")]:
        path = BOOK_DIR / link
        assert path.is_symlink() and os.readlink(path) == target, f"book/{link} -> {target}"


def test_config_keeps_the_book_offline_and_unexecuted() -> None:
    import yaml

    cfg = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert not cfg["launch_buttons"].get("thebe")
    for key in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url"):
        assert not cfg["launch_buttons"].get(key), key
    assert not cfg["html"]["analytics"].get("google_analytics_id")
    sphinx = cfg["sphinx"]["config"]
    assert not _is_remote(sphinx["mathjax_path"]), "mathjax_path must be a local path"


def test_book_builds_with_every_chapter(built_html: Path) -> None:
    for chapter in ["intro", *CHAPTERS]:
        assert (built_html / f"{chapter}.html").is_file(), f"{chapter}.html was not built"


def test_pages_follow_the_toc_order(built_html: Path) -> None:
    order, page = [], built_html / "intro.html"
    while page is not None and len(order) < 20:
        order.append(page.relative_to(built_html).with_suffix("").as_posix())
        nxt = [href for rel, href in _scan(page).links if rel == "next"]
        page = (page.parent / nxt[0]).resolve() if nxt else None
    assert order == ["intro", *CHAPTERS]


def test_no_page_fetches_from_another_server(pages: list[Path], built_html: Path) -> None:
    problems = []
    for page in pages:
        scan = _scan(page)
        rel = page.relative_to(built_html)
        for tag, attr, url in scan.fetches:
            if _is_remote(url):
                problems.append(f"{rel}: <{tag} {attr}={url!r}>")
            elif not url.startswith(("data:", "blob:", "#")):
                target = urlsplit(urljoin(page.as_uri(), url)).path
                if not Path(target).exists():
                    problems.append(f"{rel}: <{tag} {attr}={url!r}> is not in the build")
        for body in scan.inline + scan.style_attrs:
            problems += [f"{rel}: inline script/style names {u}" for u in _outside_urls(body)]
    assert not problems, "pages load outside resources:\n" + "\n".join(problems[:40])


def test_no_page_links_to_launchers_or_the_default_repository(pages: list[Path]) -> None:
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for host in FORBIDDEN_HOSTS + ("github.com/executablebooks/jupyter-book",):
            if host in text:
                problems.append(f"{page.name}: mentions {host}")
    assert not problems, "\n".join(problems)


def test_static_assets_do_not_fetch_from_another_server(built_html: Path, pages: list[Path]) -> None:
    static = built_html / "_static"
    problems = []
    for css in static.rglob("*.css"):
        text = re.sub(r"/\*.*?\*/", "", css.read_text(encoding="utf-8", errors="replace"), flags=re.S)
        for url in re.findall(r"""url\(\s*['"]?([^'")\s]+)""", text):
            if _is_remote(url):
                problems.append(f"{css.relative_to(built_html)}: url({url})")
        for url in re.findall(r"""@import\s+(?:url\()?\s*['"]?([^'");\s]+)""", text):
            if _is_remote(url):
                problems.append(f"{css.relative_to(built_html)}: @import {url}")
    # Scripts that some page loads (sphinx-thebe.js is copied but loaded by no page).
    loaded = {
        Path(urlsplit(urljoin(page.as_uri(), url)).path)
        for page in pages
        for tag, _, url in _scan(page).fetches
        if tag == "script" and not _is_remote(url)
    }
    mathjax = static / "mathjax"
    for js in sorted(loaded):
        if mathjax in js.parents:
            # MathJax names jsdelivr only as a fallback for speech-rule maps under Internet
            # Explorer or Node; in a browser its loader reads [mathjax]/sre/mathmaps.
            continue
        text = js.read_text(encoding="utf-8", errors="replace")
        problems += [f"{js.relative_to(built_html)}: names {h}" for h in FORBIDDEN_HOSTS if h in text]
    assert not problems, "static assets fetch from outside:\n" + "\n".join(problems[:40])


def test_mathjax_is_served_from_the_book(built_html: Path, pages: list[Path]) -> None:
    intro = built_html / "intro.html"
    sources = [url for tag, _, url in _scan(intro).fetches if tag == "script" and "mathjax" in url]
    assert sources, "intro.html has math but loads no MathJax"
    for url in sources:
        assert not _is_remote(url), url
        target = Path(urlsplit(urljoin(intro.as_uri(), url)).path)
        assert target.is_file() and built_html in target.parents, url
    mj = built_html / "_static" / "mathjax"
    assert (mj / "output" / "chtml" / "fonts" / "woff-v2").is_dir(), "MathJax fonts are missing"
    assert (mj / "sre" / "mathmaps").is_dir(), "MathJax speech maps are missing"
    assert not (mj / "latest.js").exists(), "latest.js fetches MathJax from a CDN"
    # No page loads a second, remote MathJax.
    for page in pages:
        for tag, _, url in _scan(page).fetches:
            assert not (tag == "script" and "mathjax" in url.lower() and _is_remote(url)), page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def served_book(built_html: Path):
    """Serve the built book on 127.0.0.1 (a random free port) for the length of one test."""
    handler = functools.partial(_QuietHandler, directory=str(built_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass


def _page_requests(netlog: Path) -> list[tuple[str, str]]:
    """(initiator, url) of every request that Chromium's network stack started."""
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        (str(ev["params"].get("initiator", "")), ev["params"]["url"])
        for ev in log["events"]
        if ev.get("type") == start_job and isinstance(ev.get("params"), dict)
        and "url" in ev["params"]
    ]


@pytest.mark.slow
def test_pages_open_in_a_browser_without_outside_requests(served_book: str, tmp_path: Path) -> None:
    """Open pages in headless Chromium and read its network log (skipped without Chromium).

    Chromium's own background traffic (update checks, with initiator "not an origin") is left
    out; every request that a page starts has the local server as initiator and must go to it.
    """
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (apt-get install chromium); static checks still ran")
    for chapter in ["intro", CHAPTERS[0]]:
        netlog = tmp_path / f"{chapter.replace('/', '_')}.json"
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
            f"--log-net-log={netlog}", "--virtual-time-budget=10000", "--dump-dom",
            f"{served_book}/{chapter}.html",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = _page_requests(netlog)
        from_pages = [(i, u) for i, u in requests if i != "not an origin"]
        local = [u for _, u in from_pages if u.startswith(served_book)]
        # Positive control: the log shows the navigation and what the page itself loaded.
        assert any(u == f"{served_book}/{chapter}.html" for _, u in requests), requests
        assert any(i == served_book and "/_static/" in u for i, u in from_pages), requests
        outside = sorted({u for _, u in from_pages if not u.startswith(served_book)})
        assert not outside, f"{chapter}.html requested outside addresses: {outside}"
        if chapter == "intro":
            assert any("/_static/mathjax/" in u for u in local), "MathJax was not loaded"
            assert "mjx-container" in proc.stdout, "MathJax did not typeset intro.html"
