"""Publishing: `make publish` puts the built book on a gh-pages branch, and pushes only if asked.

Every check runs in a temporary clone of this repository whose ``origin`` is a temporary bare
repository, so nothing reaches a real remote and this repository's refs stay as they are. The
clone gets the working tree's Makefile (the clone itself holds only the last commit) and a
tiny fake site instead of a real build. The workflow file for GitHub Pages is checked for the
install and build the README describes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "book.yml"
# Make reads the environment as variables and passes command-line variables to sub-makes
# through MAKEFLAGS: none of them may reach the make under test (`make test PUSH=1` would).
_MAKE_ENV_DROP = (
    "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GIT_DIR", "GIT_WORK_TREE",
    "HTML", "PUSH", "REMOTE", "PAGES_BRANCH", "GHP_IMPORT", "PUBLISH_MESSAGE",
)


def _ghp_import() -> str:
    exe = Path(sys.executable).parent / "ghp-import"
    found = str(exe) if exe.exists() else shutil.which("ghp-import")
    if not found:
        pytest.skip("ghp-import not installed (it is in the book extra: pip install -e '.[book]')")
    return found


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _MAKE_ENV_DROP}
    # ghp-import reads these before git config, so the commit works without a git identity.
    env.update(GIT_COMMITTER_NAME="cfdan tests", GIT_COMMITTER_EMAIL="tests@cfdan.invalid",
               GIT_AUTHOR_NAME="cfdan tests", GIT_AUTHOR_EMAIL="tests@cfdan.invalid")
    return env


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=_env(), timeout=60)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _refs(repo: Path) -> str:
    return _git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def _fake_site(root: Path) -> Path:
    (root / "_static").mkdir(parents=True)
    (root / "index.html").write_text("<html><body>fake book</body></html>\n", encoding="utf-8")
    (root / "_static" / "book.css").write_text("body {}\n", encoding="utf-8")
    return root


@pytest.fixture
def clone(tmp_path: Path):
    """(clone, bare remote): a clone of this repository whose origin is a fresh bare repo."""
    for tool in ("git", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    own_refs = _refs(REPO_ROOT)
    work, remote = tmp_path / "clone", tmp_path / "remote.git"
    _git(tmp_path, "clone", "--quiet", str(REPO_ROOT), str(work))
    _git(tmp_path, "init", "--quiet", "--bare", str(remote))
    _git(work, "remote", "set-url", "origin", str(remote))
    assert _git(work, "remote", "get-url", "--push", "origin").strip() == str(remote)
    shutil.copy2(REPO_ROOT / "Makefile", work / "Makefile")
    yield work, remote
    assert _refs(REPO_ROOT) == own_refs, "the test changed this repository's branches"


def _publish(work: Path, *variables: str) -> subprocess.CompletedProcess:
    cmd = ["make", "--no-print-directory", "-C", str(work), "publish",
           f"GHP_IMPORT={_ghp_import()}", *variables]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)


def _branch_files(repo: Path, branch: str = "gh-pages") -> set[str]:
    return set(_git(repo, "ls-tree", "-r", "--name-only", branch).split())


def test_publish_writes_the_local_branch_and_pushes_nothing(clone) -> None:
    work, remote = clone
    _fake_site(work / "book" / "_build" / "html")  # the default HTML folder
    proc = _publish(work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _branch_files(work) == {"index.html", ".nojekyll", "_static/book.css"}
    assert "fake book" in _git(work, "show", "gh-pages:index.html")
    assert "Book built from" in _git(work, "log", "-1", "--format=%s", "gh-pages")
    assert _refs(remote) == "", "make publish pushed without PUSH=1"
    assert "not pushed" in proc.stdout
    # The working branch and its files are untouched.
    assert _git(work, "rev-parse", "--abbrev-ref", "HEAD").strip() != "gh-pages"
    assert (work / "book" / "_build" / "html" / "index.html").is_file()


def test_publish_takes_the_html_folder_and_pushes_only_when_asked(clone, tmp_path: Path) -> None:
    work, remote = clone
    site = _fake_site(tmp_path / "site")
    proc = _publish(work, f"HTML={site}", "PUSH=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _refs(remote) == "", "PUSH=0 pushed"
    proc = _publish(work, f"HTML={site}", "PUSH=1")  # origin is the temporary bare repository
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _branch_files(remote) == {"index.html", ".nojekyll", "_static/book.css"}
    assert _git(remote, "rev-parse", "gh-pages") == _git(work, "rev-parse", "gh-pages")


def test_publish_refuses_without_a_built_book(clone, tmp_path: Path) -> None:
    work, _ = clone
    proc = _publish(work, f"HTML={tmp_path / 'nothing'}")
    assert proc.returncode != 0
    assert "build the book first" in proc.stderr
    assert "gh-pages" not in _git(work, "branch", "--list", "gh-pages")


def test_workflow_deploys_the_stored_outputs_to_github_pages() -> None:
    """The Pages workflow installs as the README says and builds without executing."""
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = [s for job in flow["jobs"].values() for s in job.get("steps", [])]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    for action in ("actions/checkout", "actions/setup-python", "actions/upload-pages-artifact",
                   "actions/deploy-pages"):
        assert action in uses, f"{action} is not used"
    run = "\n".join(s.get("run", "") for s in steps)
    torch = run.index("torch==2.14.1 torchvision==0.29.1")
    assert torch < run.index('-e ".[book]"'), "torch must be installed (pinned) first"
    assert run.count("-c constraints.txt") >= 2, "both installs go through the lock"
    assert "make mathjax" in run
    assert "jupyter-book build" in run and "book/" in run
    artifact = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert artifact["with"]["path"] == "book/_build/html"
    deploy = [j for j in flow["jobs"].values()
              if any(s.get("uses", "").startswith("actions/deploy-pages") for s in j["steps"])]
    assert deploy and deploy[0]["environment"]["name"] == "github-pages"
    perms = flow.get("permissions", {})
    assert perms.get("pages") == "write" and perms.get("id-token") == "write"
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert str(python["with"]["python-version"]) == "3.11"
