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
    assert err.startswith("cfdan: error: ") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_argparse_rejects_unknown_command():
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2


def test_print_config(capsys):
    assert main(["train", "--print-config", "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert '"run_id"' in out and '"epochs": 2' in out


def test_training_path_imports_without_optional_packages():
    # sympy is not blocked: torch itself imports it (torch._dynamo); the GPU machine has it.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'facenet_pytorch', 'papermill', 'fvcore', 'seaborn',"
        " 'nbval'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cfdan.cli, cfdan.training.loop, cfdan.training.evaluate, cfdan.results, cfdan.predict\n"
        "cfdan.cli.build_parser()\n"
        "from cfdan.training.config import load_config\n"
        "from cfdan.training import loop as train\n"
        "train.build_model(load_config('smoke'), 8, 32)\n"
        "assert 'cfdan.pcp.symbolic' not in sys.modules, 'the training path imports cfdan.pcp.symbolic'\n"
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
    # the shipped model is chosen on validation: export --best-of names the run it took
    import torch

    out = store / "best_full.pt"
    assert main(["export", str(out), "--best-of", "smoke_sweep", "--variant", "full"]) == 0
    assert f"({run_id}) has the best val accuracy" in capsys.readouterr().out
    source = torch.load(out, weights_only=False)["source"]
    assert source["run_id"] == run_id and source["experiment"] == "smoke_sweep"
    assert main(["export", str(out)]) == 2  # neither a checkpoint nor --best-of
    assert "one of them" in capsys.readouterr().err


def test_best_val_record_picks_validation_not_test(tmp_path):
    from cfdan import results
    from cfdan.predict import best_val_record

    for i, (val, test) in enumerate([(0.7, 0.9), (0.8, 0.6), (0.8, 0.7)]):
        results.save_record({"experiment": "x", "run_id": f"r{i}", "variant": "full",
                             "seed": i, "val": {"accuracy": val, "loss": 1.0 - 0.1 * i},
                             "test": {"accuracy": test}}, root=tmp_path)
    assert best_val_record("x", root=tmp_path)["run_id"] == "r2"  # tie on val: lower val loss
    with pytest.raises(FileNotFoundError, match="no finished run of x/dam"):
        best_val_record("x", "dam", root=tmp_path)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """An untrained smoke-size CF-DAN saved as a self-describing inference checkpoint."""
    import torch

    from cfdan.training import loop as train
    from cfdan.training.config import load_config

    cfg = load_config("smoke")
    torch.manual_seed(0)
    model = train.build_model(cfg, 3, cfg.data.image_size)
    ck = train.inference_checkpoint(model, cfg, ["happy", "sad", "neutral"], in_channels=1)
    path = tmp_path / "best.pt"
    torch.save(ck, path)
    return path


def test_predict_classifies_detected_faces_and_annotates(tmp_path, tiny_checkpoint, monkeypatch,
                                                         capsys):
    from PIL import Image

    from cfdan import predict

    photo = tmp_path / "photo.png"
    Image.new("RGB", (120, 80), (90, 120, 150)).save(photo)
    boxes = [(10.0, 10.0, 50.0, 55.0, 0.99), (60.0, 20.0, 100.0, 60.0, 0.95)]
    monkeypatch.setattr(predict, "detect_faces", lambda img, min_face=20, device="cpu": boxes)
    out = tmp_path / "annotated.png"
    assert main(["predict", str(photo), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("face ") == 2 and "annotated image" in text
    annotated = Image.open(out)
    assert annotated.size == (120, 80)
    assert annotated.getpixel((10, 30)) != (90, 120, 150)  # a box was drawn
    faces = predict.predict_photo(photo, checkpoint=tiny_checkpoint)
    for f in faces:
        assert f["label"] in ("happy", "sad", "neutral")
        assert sum(f["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_export_half_checkpoint_loads_with_close_outputs(tmp_path, tiny_checkpoint):
    import torch

    from cfdan import predict

    half = tmp_path / "models" / "half.pt"
    assert main(["export", str(tiny_checkpoint), str(half)]) == 0
    assert half.stat().st_size < tiny_checkpoint.stat().st_size
    m32, meta = predict.load_checkpoint(tiny_checkpoint)
    m16, meta16 = predict.load_checkpoint(half)
    assert meta16["weights_dtype"] == "float16" and meta16["class_names"] == meta["class_names"]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(m16(x), m32(x), atol=0.05, rtol=0.05)


def test_predict_rejects_training_state_checkpoint(tmp_path):
    import torch

    from cfdan import predict

    p = tmp_path / "last.pt"
    torch.save({"epoch": 1, "model": {}}, p)
    with pytest.raises(ValueError, match="not an inference checkpoint"):
        predict.load_checkpoint(p)


def test_predict_finds_a_ferplus_face_with_mtcnn(tmp_path, tiny_checkpoint, ferplus_root,
                                                 monkeypatch):
    pytest.importorskip("facenet_pytorch")
    from PIL import Image

    from cfdan import predict

    if ferplus_root.is_file():
        pytest.skip("needs the FER+ folder layout")
    face = sorted((ferplus_root / "FER2013Test").glob("*.png"))[0]
    canvas = Image.new("RGB", (400, 300), (200, 200, 200))
    canvas.paste(Image.open(face).convert("RGB").resize((192, 192)), (100, 50))
    photo = tmp_path / "photo.jpg"
    canvas.save(photo)
    faces = predict.predict_photo(photo, checkpoint=tiny_checkpoint, out=tmp_path / "a.png")
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0]["box"]
    assert 60 < x0 < 160 and 240 < x1 < 340 and y0 < 150 < y1


def test_diverged_training_exits_with_status_3(monkeypatch, capsys):
    from cfdan.training import loop as train

    def diverge(*_a, **_k):
        raise train.NonFiniteLossError("non-finite training loss in epoch 2")

    monkeypatch.setattr(train, "train", diverge)
    assert main(["train", "--profile", "smoke"]) == 3
    assert "cfdan: error: non-finite training loss" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input files
def _run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "cfdan", *argv], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_text_file_ends_in_one_line_naming_it(command, tmp_path):
    text = Path("/etc/passwd") if command == "predict" and Path("/etc/passwd").is_file() else None
    if text is None:
        text = tmp_path / "notes.txt"
        text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    proc = _run_cli(command, str(text))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"cfdan: error: {text}: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [b"", b"hello\n", b"PK\x03\x04 truncated zip"])
def test_files_that_are_no_checkpoint_are_bad_input(content, tmp_path, capsys):
    bad = tmp_path / "best.pt"
    bad.write_bytes(content)
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(photo)
    for argv in (["evaluate", str(bad)], ["export", str(bad), str(tmp_path / "o.pt")],
                 ["predict", str(photo), "--checkpoint", str(bad)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"cfdan: error: {bad}: not a PyTorch checkpoint"), err


def test_training_state_and_bad_out_are_bad_input(tmp_path, tiny_checkpoint, capsys):
    import torch

    last = tmp_path / "last.pt"
    torch.save({"epoch": 1, "model": {}}, last)
    assert main(["evaluate", str(last)]) == 2
    assert f"cfdan: error: {last}: not an inference checkpoint" in capsys.readouterr().err
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40)).save(photo)
    out = tmp_path / "annotated.xyz"
    assert main(["predict", str(photo), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(out)]) == 2
    assert f"cfdan: error: {out}: unknown image type" in capsys.readouterr().err


def test_exit_status_maps_the_projects_own_errors():
    from cfdan.cli import CLIError, exit_status
    from cfdan.data.types import DataError
    from cfdan.predict import InputError
    from cfdan.training.config import ConfigError
    from cfdan.training.loop import DataRootError, NonFiniteLossError

    for exc in (CLIError("x"), ConfigError("x"), DataError("x"), DataRootError("x"),
                InputError("x"), FileNotFoundError("x"), PermissionError("x")):
        assert exit_status(exc) == 2, exc
    assert exit_status(NonFiniteLossError("x")) == 3
    for exc in (ValueError("x"), RuntimeError("x"), KeyError("x")):
        assert exit_status(exc) is None  # a bug: the traceback shows


def test_a_bug_keeps_its_traceback(monkeypatch):
    from cfdan.training import loop as train

    def bug(*_a, **_k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(train, "train", bug)
    with pytest.raises(ZeroDivisionError):
        main(["train", "--profile", "smoke"])


def test_train_copies_the_record(store, capsys):
    dest = store / "copy"
    assert main(["train", "--profile", "smoke", "--quiet", "--set", "train.epochs=1",
                 "--copy-to", str(dest)]) == 0
    (copied,) = (dest / "smoke").glob("*.json")
    (stored,) = (store / "results" / "smoke").glob("*.json")
    assert copied.read_bytes() == stored.read_bytes()
    assert copied.with_suffix(".npz").is_file()


SHIPPED = REPO / "models" / "cfdan_cpu_ferplus.pt"


@pytest.mark.ferplus
@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} is not in this checkout")
def test_evaluate_follows_the_checkpoints_protocol_and_reproduces_its_record(ferplus_root,
                                                                             capsys):
    """The shipped model's config has eval.tta_flip = true: `evaluate` uses flip TTA unless
    told --no-tta-flip, and so reproduces the test accuracy of the record it was exported
    from (to the image: a near-tie logit may round the other way on another CPU)."""
    import json as json_

    import torch

    from cfdan import results

    ck = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    rec = results.get_record(ck["run_id"], ck["source"]["experiment"])
    assert main(["evaluate", str(SHIPPED), "--split", "test", "--json"]) == 0
    got = json_.loads(capsys.readouterr().out)
    assert got["protocol"] == "flip TTA (the checkpoint's eval.tta_flip)"
    assert got["n"] == rec["test"]["n"]
    assert abs(got["accuracy"] - rec["test"]["accuracy"]) * got["n"] <= 1.0 + 1e-9
    assert main(["evaluate", str(SHIPPED), "--split", "test", "--no-tta-flip"]) == 0
    assert capsys.readouterr().out.startswith(
        "protocol: no TTA (overriding the checkpoint's eval.tta_flip = true)")
