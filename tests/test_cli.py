"""Command line (cfdan.cli): help, clear errors, smoke training and sweeps into a tmp store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfdan.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "sweep", "evaluate", "predict"):
        assert cmd in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--profile", "nope"], "unknown profile 'nope'"),
        (["train", "--set", "train.bogus=1"], "valid train fields"),
        (["train", "--set", "data.dataset=mnist"], "unknown dataset 'mnist'"),
        (["train", "--set", "train.epochs"], "section.field=value"),
        (["train", "--profile", "cpu", "--set", "data.root=/no/such/dir"], "does not exist"),
        (["sweep", "no_such_experiment"], "unknown experiment"),
        (["predict", "/no/such/photo.jpg", "--checkpoint", "/no/such.pt"], "does not exist"),
        (["evaluate", "/no/such/best.pt"], "does not exist"),
    ],
)
def test_bad_arguments_give_clear_errors(argv, needle, capsys, tmp_path):
    code = main([*argv] + (["--results-dir", str(tmp_path)] if argv[0] == "train" else []))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err


def test_argparse_rejects_unknown_command():
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2


def test_print_config(capsys):
    assert main(["train", "--print-config", "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert '"run_id"' in out and '"epochs": 2' in out


def test_training_path_imports_without_optional_packages():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'facenet_pytorch', 'papermill', 'sympy', 'fvcore',"
        " 'seaborn'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cfdan.cli, cfdan.train, cfdan.evaluate, cfdan.results, cfdan.predict\n"
        "cfdan.cli.build_parser()\n"
        "from cfdan.config import load_config\n"
        "from cfdan import train\n"
        "train.build_model(load_config('smoke'), 8, 32)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout


@pytest.fixture
def store(tmp_path, monkeypatch):
    pytest.importorskip("cfdan.data.pipeline", reason="needs the data package")
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CFDAN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("CFDAN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_sweep_runs_missing_runs_and_skips_stored(store, capsys):
    from cfdan import results

    assert main(["sweep", "smoke_sweep", "--quiet"]) == 0
    df = results.load("smoke_sweep")
    assert sorted(df["variant"]) == ["baseline", "full"]
    assert sorted(df["model.preset"]) == ["baseline", "full"]
    mtimes = {p: p.stat().st_mtime_ns for p in (store / "results").rglob("*.json")}
    capsys.readouterr()
    assert main(["sweep", "smoke_sweep", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 runs (2 in the store)" in out
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten
    # the stored checkpoint evaluates through the CLI
    run_id = df.loc[df["variant"] == "full", "run_id"].item()
    ck = store / "checkpoints" / "smoke_sweep" / run_id / "best.pt"
    assert main(["evaluate", str(ck), "--split", "val"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["results", "smoke_sweep"]) == 0
    assert "test.accuracy.mean" in capsys.readouterr().out
