"""Repository hygiene: lint, no dataset images or large files tracked, conda file in step,
no import circles in ``cfdan``, and one module (``cfdan/paths.py``) that reads locations.

Also checks the test tooling itself: the nbval kernel is this environment's Python, and the
sanitize file masks volatile outputs without hiding a real change.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LINTED = ("cfdan", "tests", "benchmarks", "scripts", "book/_ext")
MAX_TRACKED_BYTES = 10 * 1024 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# FER2013/FERPlus file names (fer0000000.png), RAF-DB (train_00001_aligned.jpg, test_0001.jpg)
# and the FER+ split folders.
DATASET_NAME_RE = re.compile(
    r"(^|/)(fer\d{7}\.png|(train|test)_\d{4,5}(_aligned)?\.(jpg|png)|fer2013(new)?\.csv)$"
    r"|(^|/)FER2013(Train|Valid|Test)/",
    re.IGNORECASE,
)


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def _png_size_and_colour(path: Path) -> tuple[int, int, int] | None:
    """(width, height, colour type) from a PNG header, or None for anything else."""
    with path.open("rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[25]


def test_ruff_check_passes() -> None:
    targets = [d for d in LINTED if (REPO_ROOT / d).is_dir()]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *targets],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, f"ruff check {' '.join(targets)}:\n{proc.stdout}{proc.stderr}"


def _cfdan_imports() -> dict[str, set[str]]:
    """{module: cfdan modules it imports anywhere in its body (lazy imports included)}."""
    files = {}
    for f in sorted((REPO_ROOT / "cfdan").rglob("*.py")):
        parts = f.relative_to(REPO_ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # "from pkg import sub" imports the submodule, "from pkg import name" the package
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                         for a in node.names}
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def test_no_import_circles_in_the_package() -> None:
    """No module of ``cfdan`` imports, even lazily inside a function, one that imports it back."""
    graph = _cfdan_imports()
    circles = []

    def visit(mod: str, path: list[str]) -> None:
        for dep in sorted(graph[mod]):
            if dep in path:
                circles.append(" -> ".join([*path[path.index(dep):], dep]))
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(mod)

    done: set[str] = set()
    for mod in sorted(graph):
        if mod not in done:
            visit(mod, [mod])
    assert not circles, "import circles:\n" + "\n".join(sorted(set(circles)))


LAYERS = (
    ("cfdan", "cfdan.paths", "cfdan.atomic", "cfdan.paper", "cfdan.safe_load", "cfdan.results"),
    ("cfdan.pcp",),
    ("cfdan.model",),
    ("cfdan.data",),
    ("cfdan.training",),
    ("cfdan.analysis", "cfdan.predict", "cfdan.onnx_export"),
    ("cfdan.cli", "cfdan.__main__"),
)
"""The package's layers, bottom first: a module imports only from its own layer or below."""


def _layer(mod: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(mod == n or (n != "cfdan" and mod.startswith(n + ".")) for n in names):
            return i
    raise AssertionError(f"{mod} is in no layer of LAYERS: place it")


def test_no_upward_imports_between_layers() -> None:
    """pcp < model < data < training < analysis, predict < cli, above the base modules; no
    module imports, even lazily inside a function, from a layer above its own."""
    graph = _cfdan_imports()
    upward = [f"{mod} ({_layer(mod)}) imports {dep} ({_layer(dep)})"
              for mod, deps in sorted(graph.items()) for dep in sorted(deps)
              if _layer(dep) > _layer(mod)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


MAX_LINES = 600
OVERSIZED: dict[str, int] = {}
"""Modules still over :data:`MAX_LINES`, each at most its size today (a ratchet: they may only
shrink, and leave this list once split; issue 25 items 3, 5 and 6)."""


def test_no_module_grows_past_its_limit() -> None:
    over = {}
    for p in (REPO_ROOT / "cfdan").rglob("*.py"):
        name, n = str(p.relative_to(REPO_ROOT)), len(p.read_text().splitlines())
        if n > OVERSIZED.get(name, MAX_LINES):
            over[name] = n
    assert not over, f"over the line limit ({MAX_LINES}, or OVERSIZED's ceiling): {over}"


def test_only_paths_reads_location_variables() -> None:
    """``cfdan/paths.py`` is the one place that reads the environment for locations."""
    names = {"CFDAN_RESULTS_DIR", "CFDAN_FERPLUS_ROOT", "CFDAN_CACHE_DIR", "CFDAN_CHECKPOINT_DIR"}
    found = []
    for f in sorted((REPO_ROOT / "cfdan").rglob("*.py")):
        if f == REPO_ROOT / "cfdan" / "paths.py":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{f.relative_to(REPO_ROOT)}:{node.lineno}: {node.value}")
    assert not found, "use the functions of cfdan.paths instead:\n" + "\n".join(found)


def test_no_dataset_images_are_tracked() -> None:
    problems = []
    for rel in _tracked_files():
        if DATASET_NAME_RE.search(rel):
            problems.append(f"{rel}: dataset file name")
            continue
        path = REPO_ROOT / rel
        if path.suffix.lower() == ".png" and path.is_file():
            header = _png_size_and_colour(path)
            if header is not None and header[:2] == (48, 48):
                problems.append(f"{rel}: a 48x48 PNG, the FER2013/FERPlus image format")
    assert not problems, "dataset images must never be committed:\n" + "\n".join(problems)


def test_no_tracked_file_is_larger_than_10_mb() -> None:
    big = []
    for rel in _tracked_files():
        path = REPO_ROOT / rel
        if path.is_file() and not path.is_symlink() and path.stat().st_size > MAX_TRACKED_BYTES:
            big.append(f"{rel}: {path.stat().st_size / 2**20:.1f} MiB")
    assert not big, "files over 10 MiB are tracked:\n" + "\n".join(big)


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with path.open("rb") as f:
        return tomllib.load(f)


def _pip_requirements(entries: list) -> dict[str, str]:
    """{canonical name: 'name[extras]specifier'} for pip requirement strings."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    reqs = {}
    for entry in entries:
        if not isinstance(entry, str) or entry.startswith("-"):
            continue  # "-e ." installs the project itself
        req = Requirement(entry)
        reqs[canonicalize_name(req.name)] = str(req.specifier)
    return reqs


def test_environment_yml_mirrors_pyproject() -> None:
    import yaml
    from packaging.specifiers import SpecifierSet

    project = _load_toml(REPO_ROOT / "pyproject.toml")["project"]
    wanted = list(project["dependencies"])
    for extra in ("book", "test"):
        wanted += project.get("optional-dependencies", {}).get(extra, [])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"

    have, need = _pip_requirements(pip_lists[0]), _pip_requirements(wanted)
    missing = sorted(set(need) - set(have))
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"
    differ = {n: (need[n], have[n]) for n in need if need[n] != have[n]}
    assert not differ, f"version specifiers differ (pyproject, environment.yml): {differ}"
    extra = sorted(set(have) - set(need))
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"
    assert "-e ." in pip_lists[0], "environment.yml should install the package itself (-e .)"

    python = [d for d in conda if re.match(r"python\s*[=<>]", d)]
    assert python, "environment.yml must pin python"
    version = re.search(r"(\d+\.\d+)", python[0]).group(1)
    assert version in SpecifierSet(project["requires-python"]), (python[0], project["requires-python"])


def test_nbval_kernel_is_this_environment() -> None:
    """`--nbval-kernel-name python3` must start this environment's Python (the venv's)."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    argv = km.format_kernel_cmd()
    assert Path(argv[0]).resolve() == Path(sys.executable).resolve(), (argv, sys.executable)


def _notebook(path: Path, cells: list[tuple[str, list[dict]]]) -> None:
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": i + 1,
             "source": src, "outputs": outs}
            for i, (src, outs) in enumerate(cells)
        ],
    }
    path.write_text(json.dumps(nb), encoding="utf-8")


def _stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


@pytest.mark.slow
def test_nbval_sanitizes_volatile_output_but_not_real_changes(tmp_path: Path) -> None:
    """Run nbval on two tiny notebooks whose stored outputs came from 'another machine'.

    The first differs only in volatile parts (cwd path, memory address, timing, date, tqdm
    bar, a rounded negative zero) and must pass; it also checks that the kernel runs in the notebook's folder. The
    second stores a wrong number and must fail, so the sanitizing cannot hide a real change.
    """
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    volatile = (
        "import os, datetime, time\n"
        "from tqdm import tqdm\n"
        "print(os.path.basename(os.getcwd()), os.getcwd() + '/x.csv')\n"
        "print(object())\n"
        "t = time.perf_counter(); print(f'took {time.perf_counter() - t + 0.5:.3f} s')\n"
        "print('run on', datetime.datetime.now().isoformat())\n"
        "print(f'{-1e-17:.6f}')\n"
        "for _ in tqdm(range(3), ascii=True): time.sleep(0.01)\n"
    )
    stored = (
        "notebooks /elsewhere/clone/notebooks/x.csv\n"
        "<object object at 0x7f0000abcdef>\n"
        "took 12.345 s\n"
        "run on 2001-01-01T00:00:00.000001\n"
        "0.000000\n"
    )
    bar = "100%|##########| 3/3 [00:09<00:00,  0.33it/s]\n"
    _notebook(nbdir / "volatile.ipynb",
              [(volatile, [_stream(stored), _stream(bar, "stderr")])])
    _notebook(nbdir / "changed.ipynb", [("print(6 * 7)", [_stream("41\n")])])

    def run(nb: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "/dev/null",
             "--rootdir", str(tmp_path), "--nbval", "--nbval-kernel-name=python3",
             f"--nbval-sanitize-with={REPO_ROOT / 'tests' / 'nbval_sanitize.cfg'}",
             str(nbdir / nb)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )

    ok = run("volatile.ipynb")
    assert ok.returncode == 0, ok.stdout[-4000:] + ok.stderr[-2000:]
    bad = run("changed.ipynb")
    assert bad.returncode == 1 and "41" in bad.stdout, bad.stdout[-4000:]


# --------------------------------------------------------------------------- no face in a record
FACE_MIN_SIDE = 32
"""Arrays whose trailing (H, W) are both at least this are face-shaped (FERPlus is 48 x 48)."""
RAW_IMAGE_MAX_SIDE = 128
"""An image output no larger than this on both sides is a raw picture, not a plotted figure."""


def face_like_arrays(arrays: dict) -> list[str]:
    """Names of arrays that could hold faces: any key naming an image, any uint8 array whose
    trailing (H, W) are >= 32 x 32, and any array of >= 3 dims ending in a square >= 32 x 32
    (faces as floats); features, logits and attention maps pass."""
    hits = []
    for key, a in arrays.items():
        shape = getattr(a, "shape", ())
        trailing = len(shape) >= 2 and min(shape[-2:]) >= FACE_MIN_SIDE
        if "image" in key.lower():
            hits.append(f"{key}: its name says image")
        elif trailing and a.dtype == np.uint8:
            hits.append(f"{key}: uint8 {shape}")
        elif trailing and len(shape) >= 3 and shape[-1] == shape[-2]:
            hits.append(f"{key}: {a.dtype} {shape}, square trailing dims")
    return hits


def face_like_npz(path: Path) -> list[str]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return [f"{path.parent.name}/{path.name}: {hit}" for hit in face_like_arrays(arrays)]


_ARRAY_REPR = re.compile(r"(?:array|tensor)\(\[\[.*?dtype=(?:torch\.)?uint8", re.DOTALL)
_NUMBER_ROW = re.compile(r"^[\s\[(]*-?\d+(?:\.\d*)?(?:[\s,]+-?\d+(?:\.\d*)?){31,}[\s\]),]*$")


def _text_has_raw_array(text: str) -> bool:
    """A printed uint8 array/tensor of >= 2 dims, or >= 32 consecutive rows of >= 32 numbers."""
    if _ARRAY_REPR.search(text):
        return True
    run = 0
    for line in text.splitlines():
        run = run + 1 if _NUMBER_ROW.match(line) else 0
        if run >= FACE_MIN_SIDE:
            return True
    return False


def _json_has_raw_array(obj) -> bool:
    """A nested list of >= 32 rows of >= 32 numbers anywhere in a JSON output."""
    if isinstance(obj, dict):
        return any(_json_has_raw_array(v) for v in obj.values())
    if isinstance(obj, list):
        rows = [r for r in obj if isinstance(r, list)]
        if len(rows) >= FACE_MIN_SIDE and all(
                len(r) >= FACE_MIN_SIDE and all(isinstance(v, int | float) for v in r)
                for r in rows):
            return True
        return any(_json_has_raw_array(v) for v in obj)
    return False


def _image_size(mime: str, b64: str) -> tuple[int, int] | None:
    import base64
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            return im.size
    except Exception:  # noqa: BLE001 - an unreadable image is reported by its size as None
        return None


def face_like_outputs(nb: dict) -> list[str]:
    """Notebook outputs that embed a raw face-shaped array: a printed one, one in JSON, or a
    raw picture shown as an image (<= 128 px a side). Plotted figures (PNG) are fine."""
    hits = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []) or []:
            texts = [out.get("text", "")]
            for mime, value in (out.get("data") or {}).items():
                if mime.startswith("image/") and mime != "image/svg+xml":
                    size = _image_size(mime, "".join(value) if isinstance(value, list) else value)
                    if size is not None and max(size) <= RAW_IMAGE_MAX_SIDE:
                        hits.append(f"cell {i}: a raw {size[0]}x{size[1]} {mime}")
                elif mime == "application/json" or mime.endswith("+json"):
                    if _json_has_raw_array(value):
                        hits.append(f"cell {i}: {mime} holds a raw array")
                elif mime.startswith("text/"):
                    texts.append(value)
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                if text and _text_has_raw_array(text):
                    hits.append(f"cell {i}: a printed array shaped like an image")
    return hits


def _tracked_under(folder: str, suffix: str) -> list[Path]:
    """Tracked files under ``folder`` ending in ``suffix`` (all such files outside git)."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        return sorted((REPO_ROOT / folder).rglob(f"*{suffix}"))
    return [REPO_ROOT / p for p in _tracked_files()
            if p.startswith(f"{folder}/") and p.endswith(suffix) and (REPO_ROOT / p).is_file()]


def test_no_record_holds_a_face() -> None:
    """Records keep indices into the test split (attention_index, tsne_index), never pixels."""
    hits = [h for p in _tracked_under("results", ".npz") for h in face_like_npz(p)]
    assert not hits, "face-shaped arrays in committed records:\n" + "\n".join(hits)


def test_no_notebook_output_embeds_a_face_array() -> None:
    hits = []
    for p in _tracked_under("notebooks", ".ipynb"):
        nb = json.loads(p.read_text(encoding="utf-8"))
        hits += [f"{p.name}: {h}" for h in face_like_outputs(nb)]
    assert not hits, "raw face-shaped arrays in notebook outputs:\n" + "\n".join(hits)


def test_the_face_checks_can_fail(tmp_path: Path) -> None:
    """The two checks above catch a face in an .npz and in each kind of notebook output, and
    pass what the records and figures legitimately hold."""
    import base64
    import io

    from PIL import Image

    face = np.random.default_rng(0).integers(0, 256, (2, 1, 48, 48), dtype=np.uint8)
    np.savez(tmp_path / "bad.npz", pixels=face, faces_float=face.astype(np.float32)[:, 0],
             attention_images=np.zeros(3))
    hits = face_like_npz(tmp_path / "bad.npz")
    assert len(hits) == 3 and "pixels" in hits[0], hits
    np.savez(tmp_path / "good.npz", attention_spatial=np.zeros((8, 7, 7), np.float32),
             tsne_features=np.zeros((2000, 128), np.float16), confusion=np.eye(8, dtype=int),
             snapshot_features=np.zeros((4, 500, 64), np.float16),
             attention_index=np.arange(8), class_names=np.asarray(["a", "b"]))
    assert face_like_npz(tmp_path / "good.npz") == []

    def png(side: int) -> str:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((side, side), np.uint8)).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    with np.printoptions(threshold=10**6, linewidth=10**6):
        full = str(face[0, 0].astype(int))  # every number printed, no dtype
    bad = [
        {"output_type": "execute_result", "data": {"text/plain": repr(face[0, 0])}},
        {"output_type": "stream", "name": "stdout", "text": full},
        {"output_type": "display_data", "data": {"image/png": png(48)}},
        {"output_type": "display_data", "data": {"application/json": face[0, 0].tolist()}},
    ]
    for out in bad:
        nb = {"cells": [{"cell_type": "code", "outputs": [out]}]}
        assert face_like_outputs(nb), out["output_type"]
    good = [
        {"output_type": "display_data",
         "data": {"image/png": png(400), "text/plain": "<Figure size 700x800 with 16 Axes>"}},
        {"output_type": "execute_result", "data": {"text/plain": repr(np.zeros((8, 8)))}},
    ]
    assert face_like_outputs({"cells": [{"cell_type": "code", "outputs": good}]}) == []
