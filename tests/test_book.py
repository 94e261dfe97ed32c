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

Where Chromium is installed (``apt-get install chromium``; .ci/run does it as root), the
introduction and every chapter are opened in headless Chromium, driven over the DevTools
protocol, and fail on console errors, images that did not load, unrendered math and requests
to other servers. The *Try it* page is also given a photo, and what it finds must be what
``python -m cfdan predict`` finds in the same photo.
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
    "try",
    "notebooks/01_pcp_activation",
    "notebooks/02_architecture",
    "notebooks/03_data",
    "notebooks/04_results",
    "notebooks/05_reproducibility",
    "evidence",
    "notebooks/A1_internals",
    "execution",
]
# What the Try-it page loads once a photo arrives, under _static/ of the build (make ort demo).
TRY_ASSETS = (
    "demo/try.js", "demo/meta.json", "demo/cfdan.onnx", "demo/pnet.onnx", "demo/rnet.onnx",
    "demo/onet.onnx", "ort/ort.wasm.min.js", "ort/ort-wasm-simd-threaded.mjs",
    "ort/ort-wasm-simd-threaded.wasm",
)
# The page against `python -m cfdan predict --json` (whose boxes are rounded to 0.1 px).
TRY_BOX_TOL_PX = 1.0
TRY_PROB_TOL = 1e-3
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


def test_every_executed_notebook_is_a_page() -> None:
    """What `make notebooks` executes (chapters 01_..., appendices A1_...) is in the TOC."""
    folder = REPO_ROOT / "notebooks"
    executed = [*sorted(folder.glob("[0-9]*.ipynb")), *sorted(folder.glob("A[0-9]*.ipynb"))]
    pages = [c for c in CHAPTERS if c.startswith("notebooks/")]
    assert [f"notebooks/{p.stem}" for p in executed] == pages


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
    # ...and what the Try-it page's script adds when a photo arrives (make ort).
    loaded |= {*static.glob("ort/*.js"), *static.glob("ort/*.mjs")}
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


def _browser_or_skip() -> str:
    """Chromium's path, once it and websocket-client are there; else skip (fail under
    ``CFDAN_REQUIRE_BROWSER=1``)."""
    browser = _chromium()
    if browser is None:
        _skip_or_fail("Chromium not installed (apt-get install chromium)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _skip_or_fail("websocket-client not installed (pip install -e '.[test]')")
    return browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _skip_or_fail(reason: str) -> None:
    """Skip, unless CFDAN_REQUIRE_BROWSER=1 (set by .ci/run after it installed Chromium)."""
    if os.environ.get("CFDAN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, but CFDAN_REQUIRE_BROWSER=1 asks for the browser check")
    pytest.skip(f"{reason}; the static checks still ran")


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


class _DevTools:
    """A minimal Chrome DevTools Protocol client: one websocket to the browser, one page.

    Commands are sent with an id and answered in order; every event that arrives meanwhile
    is kept in ``events`` so the test can read what happened while a page loaded.
    """

    def __init__(self, ws_url: str, timeout: float) -> None:
        import websocket  # websocket-client, the test extra

        # Chromium refuses DevTools websockets that send an Origin header it was not told of.
        self._ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def close(self) -> None:
        self._ws.close()

    def _receive(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from Chromium in time")
        self._ws.settimeout(remaining)
        message = json.loads(self._ws.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def send(self, method: str, params: dict | None = None, *, page: bool = True,
             timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if page and self.session:
            message["sessionId"] = self.session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def page_events(self, since: int) -> list[dict]:
        return [e for e in self.events[since:] if e.get("sessionId") == self.session]

    def wait_for(self, method: str, since: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.page_events(since):
                if event["method"] == method:
                    return event
            self._receive(deadline)


def _open_page(cdp: _DevTools) -> None:
    """Open a blank tab, attach ``cdp`` to it and enable the domains the checks read."""
    target = cdp.send("Target.createTarget", {"url": "about:blank"}, page=False)
    cdp.session = cdp.send(
        "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
    )["sessionId"]
    for domain in ("Page", "Runtime", "Network", "Log"):
        cdp.send(f"{domain}.enable")


def _page_problems(events: list[dict], served_book: str) -> list[str]:
    """Console errors, requests to another server and answers of 400 or more among a page's
    events. A page that names no icon makes Chromium itself ask the server root for
    /favicon.ico (on GitHub Pages, the account's root, outside the book); the page asked for
    nothing, and a desktop browser shows no console message for it: left out."""
    favicon = f"{served_book}/favicon.ico"
    events = [e for e in events if favicon not in (
        e.get("params", {}).get("response", {}).get("url"),
        e.get("params", {}).get("request", {}).get("url"),
        e.get("params", {}).get("entry", {}).get("url"),
    )]
    found = _console_errors(events)
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Network.requestWillBeSent":
            req = params["request"]["url"]
            if not req.startswith((served_book + "/", "data:", "blob:", "about:")):
                found.append(f"outside request: {req}")
        elif event["method"] == "Network.responseReceived":
            status = params["response"]["status"]
            if status >= 400:
                found.append(f"HTTP {status}: {params['response']['url']}")
    return found


def _start_chromium(browser: str, workdir: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """Start headless Chromium with a DevTools port; returns (process, browser websocket URL)."""
    profile = workdir / "profile"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--no-default-browser-check",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--mute-audio", "--window-size=1400,900",
        # Nothing leaves the machine: outside host names fail at once (the request is still
        # started, so the logs below still show it); the served book is on 127.0.0.1.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", f"--log-net-log={workdir / 'netlog.json'}",
        "--remote-debugging-port=0", "about:blank",
    ]
    log = (workdir / "chromium.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (workdir / "chromium.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"Chromium exited with {proc.returncode} before it opened DevTools:\n{tail}")
        lines = port_file.read_text().split() if port_file.is_file() else []
        if len(lines) == 2:
            return proc, f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"Chromium did not open its DevTools port within {timeout:.0f} s")


def _stop_chromium(proc: subprocess.Popen, cdp: _DevTools | None) -> None:
    """Close the browser cleanly (so the net log is complete JSON); kill it if it hangs."""
    if cdp is not None:
        try:
            cdp.send("Browser.close", page=False, timeout=10)
        except Exception:  # the browser may close the socket before it answers
            pass
        cdp.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# Runs in the page after its load event: waits for MathJax's first typesetting and for every
# image (lazy ones too), then returns what the reader would see.
_PAGE_PROBE_JS = r"""
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + 60000;
  let mathjax = "not loaded";
  if (document.querySelector('script[src*="mathjax"]')) {
    const ready = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
    while (!ready() && Date.now() < deadline) await sleep(50);
    if (ready()) { await MathJax.startup.promise; mathjax = "typeset"; }
    else mathjax = "never started";
  }
  const images = [...document.images];
  images.forEach((img) => { if (img.loading === "lazy") img.loading = "eager"; });
  await Promise.all(images.map((img) => img.complete ? null : new Promise((r) => {
    img.addEventListener("load", r, {once: true});
    img.addEventListener("error", r, {once: true});
    setTimeout(r, 30000);
  })));
  // Visible text outside code, MathJax output and hidden elements, one string per block.
  const skip = "pre, code, kbd, samp, script, style, noscript, textarea, mjx-container";
  const blocks = new Map();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest(skip)) continue;
    if (el.checkVisibility ? !el.checkVisibility() : !el.getClientRects().length) continue;
    const block = el.closest("p, li, td, th, dt, dd, h1, h2, h3, h4, h5, h6, figcaption, div")
      || document.body;
    blocks.set(block, (blocks.get(block) || "") + node.data);
  }
  await sleep(200);  // late console messages
  return {
    mathjax,
    typeset: document.querySelectorAll("mjx-container").length,
    mathSources: document.querySelectorAll(".math, .MathJax_Preview").length,
    mathErrors: [...document.querySelectorAll("mjx-merror")]
      .map((e) => e.getAttribute("data-mjx-error") || e.textContent),
    images: images.length,
    // where the verdict table starts on the page as it opens (null: no such table)
    verdictTop: (() => {
      const t = [...document.querySelectorAll("table")]
        .find((el) => el.textContent.includes("ours: paired difference"));
      return t ? t.getBoundingClientRect().top + window.scrollY : null;
    })(),
    viewportHeight: window.innerHeight,
    brokenImages: images.filter((img) => !img.complete || img.naturalWidth === 0)
      .map((img) => img.getAttribute("src") || img.outerHTML.slice(0, 200)),
    text: [...blocks.values()],
  };
})()
"""
# TeX left as source: an opening \( or \[, $$, \begin{...}, or a $...$ pair in the TeX
# (and pandoc) sense: no space just inside either dollar and no digit right after the closing
# one, so prose such as "costs $5 or $10" does not count.
_RAW_MATH_RE = re.compile(
    r"\\[(\[]|\$\$|\\begin\{|(?<![\\$])\$(?![\s$])[^$\n]{1,300}?(?<![\s\\])\$(?!\d)"
)


def _console_errors(events: list[dict]) -> list[str]:
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            found.append("console.error: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append("uncaught: " + str(
                details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
    return found


@pytest.mark.slow
def test_pages_open_in_a_browser_without_outside_requests(served_book: str, tmp_path: Path) -> None:
    """Open every chapter in headless Chromium, driven over the DevTools protocol.

    Each page fails on: a console error (console.error, an uncaught exception, or a browser
    log error such as a resource that did not load), a request to another server, an answer
    of 400 or more, an ``<img>`` whose ``naturalWidth`` is 0 after loading, a MathJax error,
    and TeX left unrendered in the visible text once MathJax has typeset the page. Chromium's
    network log is read as well, as a second witness for outside requests; its own background
    traffic (initiator "not an origin") is left out. Skipped without Chromium
    (``apt-get install chromium``) unless ``CFDAN_REQUIRE_BROWSER=1``.
    """
    browser = _browser_or_skip()

    problems: dict[str, list[str]] = {}
    seen: dict[str, dict] = {}
    proc, ws_url = _start_chromium(browser, tmp_path, timeout=60)
    cdp = None
    try:
        cdp = _DevTools(ws_url, timeout=60)
        _open_page(cdp)
        for chapter in ["intro", *CHAPTERS]:
            url = f"{served_book}/{chapter}.html"
            mark = len(cdp.events)
            nav = cdp.send("Page.navigate", {"url": url})
            found = problems.setdefault(chapter, [])
            if nav.get("errorText"):
                found.append(f"navigation failed: {nav['errorText']}")
                continue
            cdp.wait_for("Page.loadEventFired", mark, timeout=90)
            reply = cdp.send("Runtime.evaluate", {
                "expression": _PAGE_PROBE_JS, "awaitPromise": True, "returnByValue": True,
            }, timeout=120)
            if "exceptionDetails" in reply:
                found.append(f"page probe failed: {reply['exceptionDetails']}")
                continue
            probe = seen[chapter] = reply["result"]["value"]
            events = cdp.page_events(mark)
            found += _page_problems(events, served_book)
            if not any(e["method"] == "Network.responseReceived"
                       and e["params"]["response"]["url"] == url for e in events):
                found.append("the page itself was never received")
            found += [f"image did not load: {src}" for src in probe["brokenImages"]]
            found += [f"MathJax error: {err}" for err in probe["mathErrors"]]
            if probe["mathSources"] and not (probe["mathjax"] == "typeset" and probe["typeset"]):
                found.append(f"{probe['mathSources']} math elements but MathJax {probe['mathjax']}"
                             f" and {probe['typeset']} typeset")
            raw = [
                block[max(0, m.start() - 30): m.end() + 50].replace("\n", " ")
                for block in probe["text"] for m in _RAW_MATH_RE.finditer(block)
            ]
            if raw:
                found.append(f"{len(raw)} pieces of unrendered math, first: "
                             + " | ".join(f"...{r}..." for r in raw[:3]))
    finally:
        _stop_chromium(proc, cdp)

    report = [f"{chapter}.html: {p}" for chapter, found in problems.items() for p in found]
    assert not report, "the browser found problems:\n" + "\n".join(report[:60])

    # Positive controls: every page was probed, the checks had something to check.
    assert set(seen) == {"intro", *CHAPTERS}, sorted(seen)
    assert seen["intro"]["typeset"] > 0, "MathJax typeset nothing on intro.html"
    # Answer first: the verdict table starts on the first screen (1400 x 900) of the landing
    # page and of chapter 4, with room for its header and first rows.
    for page in ("intro", "notebooks/04_results"):
        top, height = seen[page]["verdictTop"], seen[page]["viewportHeight"]
        assert top is not None, f"{page}.html shows no verdict table"
        assert top < height - 150, f"{page}.html: the verdict table starts at {top:.0f} px " \
            f"of a {height} px screen"
    assert sum(p["images"] for p in seen.values()) > 0, "no chapter showed an image"
    requests = _page_requests(tmp_path / "netlog.json")
    assert any(u == f"{served_book}/intro.html" for _, u in requests), requests[:20]
    assert any("/_static/mathjax/" in u for _, u in requests), "MathJax was not loaded"
    from_pages = [u for i, u in requests if i != "not an origin"]
    outside = sorted({u for u in from_pages if not u.startswith(served_book + "/")})
    assert not outside, f"the network log shows outside requests: {outside}"


# Runs in the Try-it page once a photo is in its file input: waits for window.cfdanResult (set
# when the page has found and classified the faces, or met an error) and returns it.
_TRY_RESULT_JS = r"""
(async () => {
  const deadline = Date.now() + 240000;
  while (!window.cfdanResult && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const status = (document.getElementById("cfdan-status") || {}).textContent || "";
  await new Promise((r) => setTimeout(r, 200));  // late console messages
  return window.cfdanResult || {error: "no result within 240 s", status};
})()
"""


@pytest.mark.slow
def test_try_page_matches_the_command_line(served_book: str, built_html: Path,
                                           tmp_path: Path) -> None:
    """The Try-it page, in headless Chromium, on scikit-image's astronaut photo given through
    its file input (DevTools ``DOM.setFileInputFiles``), finds what ``python -m cfdan predict
    PHOTO --json`` finds: as many faces, boxes within :data:`TRY_BOX_TOL_PX`, the same labels
    and every probability within :data:`TRY_PROB_TOL`; with no console error and no request to
    another server. The page's own timings are printed, not asserted. Skipped (failed under
    ``CFDAN_REQUIRE_BROWSER=1``) without Chromium or without the page's nets and runtime in the
    build (``make ort demo``; ``make test`` makes them)."""
    browser = _browser_or_skip()
    missing = [a for a in TRY_ASSETS if not (built_html / "_static" / a).is_file()]
    if missing:
        _skip_or_fail(f"the Try-it page's files are not in the build ({', '.join(missing)}): "
                      f"run `make ort demo` (make test does) before the tests")
    from PIL import Image
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    cli = subprocess.run([sys.executable, "-m", "cfdan", "predict", str(photo), "--json"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, f"cfdan predict failed:\n{cli.stderr[-3000:]}"
    want = json.loads(cli.stdout)
    assert want, "the command line finds no face in the astronaut photo"

    proc, ws_url = _start_chromium(browser, tmp_path, timeout=60)
    cdp = None
    try:
        cdp = _DevTools(ws_url, timeout=60)
        _open_page(cdp)
        url = f"{served_book}/try.html"
        mark = len(cdp.events)
        nav = cdp.send("Page.navigate", {"url": url})
        assert not nav.get("errorText"), f"try.html: {nav['errorText']}"
        cdp.wait_for("Page.loadEventFired", mark, timeout=90)
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "#cfdan-file"})
        assert node.get("nodeId"), "try.html has no file input #cfdan-file"
        cdp.send("DOM.setFileInputFiles", {"files": [str(photo)], "nodeId": node["nodeId"]})
        reply = cdp.send("Runtime.evaluate", {
            "expression": _TRY_RESULT_JS, "awaitPromise": True, "returnByValue": True,
        }, timeout=300)
        problems = _page_problems(cdp.page_events(mark), served_book)
    finally:
        _stop_chromium(proc, cdp)
    assert "exceptionDetails" not in reply, reply["exceptionDetails"]
    page = reply["result"]["value"]
    assert not problems, "try.html: " + "\n".join(problems[:40])
    assert "error" not in page, f"the page reports: {page}"
    requests = [u for i, u in _page_requests(tmp_path / "netlog.json") if i != "not an origin"]
    outside = sorted({u for u in requests if not u.startswith(served_book + "/")})
    assert not outside, f"the network log shows outside requests: {outside}"
    assert any(u.endswith("/_static/demo/cfdan.onnx") for u in requests), "no model was loaded"

    got = page["faces"]
    assert len(got) == len(want), f"page: {len(got)} faces, command line: {len(want)}"
    box_diff = prob_diff = 0.0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert not g["manual"], f"face {i + 1} was not detected"
        box_diff = max(box_diff, *(abs(a - b) for a, b in zip(g["box"], w["box"], strict=True)))
        assert g["label"] == w["label"], f"face {i + 1}: {g['label']} vs {w['label']}"
        assert set(g["probabilities"]) == set(w["probabilities"])
        prob_diff = max(prob_diff, *(abs(g["probabilities"][k] - p)
                                     for k, p in w["probabilities"].items()))
        assert abs(g["detector_score"] - w["detector_score"]) <= TRY_PROB_TOL
        total = sum(map(sum, g["attention"]))
        assert abs(total - 1) < 1e-4, f"face {i + 1}: the attention map sums to {total}"
    t = page["timing"]
    print(f"try.html: {len(got)} face(s) like the command line; largest box difference "
          f"{box_diff:.4f} px, largest probability difference {prob_diff:.1e}; in the page: "
          f"detection {t['detect_ms']:.0f} ms, classification {t['classify_ms_per_face']:.1f} ms "
          f"per face (onnxruntime-web {t['onnxruntime_web']}, {t['backend']}, "
          f"{t['threads']} thread(s))")
    assert box_diff <= TRY_BOX_TOL_PX, f"boxes differ by up to {box_diff:.2f} px"
    assert prob_diff <= TRY_PROB_TOL, f"probabilities differ by up to {prob_diff:.2e}"


# Runs try.js's pure functions under Node (module.exports): argv[2] holds the image and the cases,
# the answers go to argv[3].
_TRY_PORT_JS = r"""
const fs = require("fs");
const core = require(process.argv[2]);
const spec = JSON.parse(fs.readFileSync(process.argv[3]));
const img = {data: Uint8ClampedArray.from(spec.rgba), width: spec.width, height: spec.height};
const out = {
  pillow: spec.pillow.map((c) => Array.from(core.pilResize(
    core.cropChannels(img, c.l, c.t, c.r, c.b, c.channels), c.ow, c.oh).data)),
  area: spec.area.map((c) => Array.from(core.areaResize(
    img, c.x0, c.y0, c.w, c.h, c.oh, c.ow, 127.5, 0.0078125))),
};
fs.writeFileSync(process.argv[4], JSON.stringify(out));
"""


def test_try_page_resizes_as_pillow_and_pytorch(tmp_path: Path) -> None:
    """The resizing that try.js ports, run under Node on random crops and sizes: Pillow's
    crop + convert("L") + bicubic resize (predict.face_batch) to the byte, and PyTorch's
    area interpolation (facenet-pytorch's imresample, P-Net's pyramid and the R-/O-Net crops)
    to the float32 bit. Skipped without Node (npm installs it with MathJax)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("Node.js is not installed (it comes with npm, which make mathjax needs)")
    rng = np.random.default_rng(0)
    h, w = 131, 97
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
    pillow = []
    for _ in range(150):
        cw, ch = (int(v) for v in rng.integers(1, 140, 2))
        if rng.random() < 0.3:  # the page's case: a (nearly) square crop to 48 x 48
            ch = cw + int(rng.integers(-1, 2)) or 1
            ow = oh = 48
        else:
            ow, oh = (int(v) for v in rng.integers(1, 80, 2))
        left, top = int(rng.integers(-20, w)), int(rng.integers(-20, h))
        pillow.append({"l": left, "t": top, "r": left + cw, "b": top + ch, "ow": ow, "oh": oh,
                       "channels": int(rng.choice([1, 3]))})
    area = [{"x0": 0, "y0": 0, "w": w, "h": h, "oh": int(h * s + 1), "ow": int(w * s + 1)}
            for s in (0.6, 0.6 * 0.709, 0.25, 0.11)]
    for _ in range(60):
        x0, y0 = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
        area.append({"x0": x0, "y0": y0, "w": int(rng.integers(1, w - x0 + 1)),
                     "h": int(rng.integers(1, h - y0 + 1)),
                     "ow": int(rng.choice([24, 48])), "oh": 0})
        area[-1]["oh"] = area[-1]["ow"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"rgba": rgba.ravel().tolist(), "width": w, "height": h,
                                "pillow": pillow, "area": area}))
    script = tmp_path / "port.js"
    script.write_text(_TRY_PORT_JS)
    answers = tmp_path / "out.json"
    proc = subprocess.run([node, str(script), str(BOOK_DIR / "_extra" / "_static" / "demo" /
                                                  "try.js"), str(spec), str(answers)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(answers.read_text())

    photo = Image.fromarray(rgb)
    wrong = []
    for c, js in zip(pillow, got["pillow"], strict=True):
        crop = photo.crop((c["l"], c["t"], c["r"], c["b"]))
        crop = crop.convert("L") if c["channels"] == 1 else crop
        want = np.asarray(crop.resize((c["ow"], c["oh"]))).ravel()
        if not np.array_equal(want, np.asarray(js)):
            wrong.append(c)
    assert not wrong, f"{len(wrong)} of {len(pillow)} resizes differ from Pillow's: {wrong[:5]}"
    # as detect_face holds the photo: (1, H, W, 3) uint8 -> permuted to NCHW, float32
    x = torch.as_tensor(rgb)[None].permute(0, 3, 1, 2).float()
    for c, js in zip(area, got["area"], strict=True):
        region = x[:, :, c["y0"]:c["y0"] + c["h"], c["x0"]:c["x0"] + c["w"]]
        want = (F.interpolate(region, size=(c["oh"], c["ow"]), mode="area") - 127.5) * 0.0078125
        assert np.array_equal(want.numpy().ravel(), np.asarray(js, dtype=np.float32)), c
