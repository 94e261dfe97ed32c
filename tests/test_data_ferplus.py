"""FERPlus reader, label modes, cache and pack (§4.1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import FER_FOLDERS, FER_ROWS, make_ferplus

from cfdan.data import DataError, load_dataset
from cfdan.data import ferplus as F
from cfdan.data import pack as P
from cfdan.data.commands import compare


@pytest.fixture
def fer(tmp_path: Path):
    root = tmp_path / "ferplus"
    written = make_ferplus(root)
    return root, written, tmp_path / "cache"


# --------------------------------------------------------------------------- label rules
def test_majority_rule_on_hand_worked_rows():
    votes = np.array([v for v, _ in FER_ROWS], dtype=np.uint8)
    keep, arg = F.majority_labels(votes)
    for (row, expected), k, a in zip(FER_ROWS, keep, arg, strict=True):
        assert bool(k) == (expected is not None), row
        if expected is not None:
            assert a == expected, row


def test_vectorised_majority_equals_reference_rule():
    rng = np.random.default_rng(0)
    votes = rng.multinomial(10, rng.dirichlet(np.full(10, 0.4), size=1)[0], size=3000)
    votes = np.concatenate([votes, rng.multinomial(10, np.full(10, 0.1), size=1000)])
    keep, arg = F.majority_labels(votes.astype(np.uint8))
    for row, k, a in zip(votes, keep, arg, strict=True):
        dist = F.process_votes(row, "majority")
        ref = int(np.argmax(dist))
        assert bool(k) == (ref < 8)
        if k:
            assert a == ref


def test_crossentropy_mode_worked_example():
    # [4,0,0,1,3,2,0,0,0,0]: drop the 1; top columns 4 then 3 reach 7 >= 0.75 * 9; 7 > 4.5.
    dist = F.process_votes([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "crossentropy")
    assert dist == pytest.approx([4 / 7, 0, 0, 0, 3 / 7, 0, 0, 0, 0, 0])
    assert F.process_votes([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "majority")[8] == 1.0
    # unknown tied with the 2nd emotion: dropped, the emotions (7 of 10 votes) are kept
    dist = F.process_votes([4, 3, 0, 0, 0, 0, 0, 0, 3, 0], "crossentropy")
    assert dist == pytest.approx([4 / 7, 3 / 7, 0, 0, 0, 0, 0, 0, 0, 0])
    # unknown tied with the top emotion: only 5 of 10 votes remain -> rejected
    assert F.process_votes([5, 0, 0, 0, 0, 0, 0, 0, 5, 0], "crossentropy")[8] == 1.0
    # unknown first at the top: rejected
    assert F.process_votes([0, 0, 0, 0, 0, 0, 0, 0, 6, 4], "crossentropy")[8] == 1.0


def test_sample_targets_follows_the_distribution():
    soft = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([F.sample_targets(soft, g) for _ in range(400)])
    assert (draws[:, 0] == 1).all()
    assert set(draws[:, 1].tolist()) == {0, 2}


# --------------------------------------------------------------------------- folder reader
def test_fixture_loads_with_expected_labels_and_pixels(fer):
    root, written, cache = fer
    for split in FER_FOLDERS:
        ds = load_dataset("ferplus", root, split, cache_dir=cache)
        exp = written[split]["expected"]
        assert ds.ids == list(exp)
        assert ds.labels.tolist() == list(exp.values())
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 48, 48)
        for i, name in enumerate(ds.ids):
            assert np.array_equal(ds.images[i, 0].numpy(), written[split]["pixels"][name])
        assert ds.soft is None and ds.class_names == F.CLASS_NAMES and ds.split == split


def test_soft_modes(fer):
    root, written, cache = fer
    tr = load_dataset("ferplus", root, "train", label_mode="crossentropy", cache_dir=cache)
    assert tr.soft is not None and tr.soft.shape == (len(tr), 8)
    assert torch.allclose(tr.soft.sum(1), torch.ones(len(tr)))
    assert torch.equal(tr.soft.argmax(1), tr.labels)
    assert len(tr) > len(written["train"]["expected"])  # the 4/3 split row is kept
    pr = load_dataset("ferplus", root, "train", label_mode="probability", cache_dir=cache)
    assert torch.equal(pr.soft, tr.soft)
    # evaluation splits keep the majority protocol in every mode
    te = load_dataset("ferplus", root, "test", label_mode="crossentropy", cache_dir=cache)
    tm = load_dataset("ferplus", root, "test", cache_dir=cache)
    assert te.ids == tm.ids and torch.equal(te.labels, tm.labels)
    assert te.soft is not None and torch.allclose(te.soft.sum(1), torch.ones(len(te)))


def test_cache_is_reused_and_notices_changed_files(fer):
    root, _, cache = fer
    a = load_dataset("ferplus", root, "val", cache_dir=cache)
    entries = list((cache / "ferplus").iterdir())
    assert len(entries) == 1
    b = load_dataset("ferplus", root, "val", cache_dir=cache)
    assert compare(a, b) == "" and a.fingerprint == b.fingerprint
    # change one image: new content, new fingerprint, the old entry is replaced
    target = root / "FER2013Valid" / a.ids[0]
    from PIL import Image

    Image.fromarray(np.full((48, 48), 7, np.uint8)).save(target)
    c = load_dataset("ferplus", root, "val", cache_dir=cache)
    assert c.fingerprint != a.fingerprint
    assert (c.images[0] == 7).all()
    assert len(list((cache / "ferplus").iterdir())) == 1


def test_cache_entry_from_other_sources_is_rebuilt(fer):
    root, _, cache = fer
    a = load_dataset("ferplus", root, "val", cache_dir=cache)
    b = load_dataset("ferplus", root, "test", cache_dir=cache)
    by_source = {}
    for d in (cache / "ferplus").iterdir():
        by_source[json.loads((d / "meta.json").read_text())["source"]] = d
    val_dir = by_source[str((root / "FER2013Valid").resolve())]
    test_dir = by_source[str((root / "FER2013Test").resolve())]
    # put the test split's arrays under the val split's key
    for f in ("images.npy", "votes.npy"):
        shutil.copyfile(test_dir / f, val_dir / f)
    with pytest.warns(UserWarning, match="does not match its source"):
        again = load_dataset("ferplus", root, "val", cache_dir=cache)
    assert compare(again, a) == ""
    assert compare(again, b) != ""


def test_fingerprint_is_independent_of_cache_and_copy(fer, tmp_path):
    root, _, cache = fer
    a = load_dataset("ferplus", root, "train", cache_dir=cache)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new mtimes, same content
    b = load_dataset("ferplus", copy, "train", cache_dir=tmp_path / "other-cache")
    assert a.fingerprint == b.fingerprint


# --------------------------------------------------------------------------- errors
def _edit_label(root: Path, folder: str, fn) -> None:
    f = root / folder / "label.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(fn(lines)) + "\n")


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing_split", "split folder is missing"),
        ("missing_label", "label file is missing"),
        ("empty_label", "no rows"),
        ("nine_votes", "got 11 fields"),
        ("bad_vote", "must be integers"),
        ("negative_vote", "out of range"),
        ("missing_image", "is missing"),
        ("truncated_image", "unreadable or truncated"),
        ("not_an_image", "unreadable or truncated"),
        ("binary_label", "not CSV text"),
        ("label_is_folder", "label file is missing"),
        ("wrong_size", "expected 48x48"),
        ("empty_folder", "label file is missing"),
    ],
)
def test_errors_name_the_file_and_problem(fer, breakage, message):
    root, written, cache = fer
    val = root / "FER2013Valid"
    first = next(iter(written["val"]["pixels"]))
    if breakage == "missing_split":
        shutil.rmtree(val)
    elif breakage == "missing_label":
        (val / "label.csv").unlink()
    elif breakage == "empty_label":
        (val / "label.csv").write_text("")
    elif breakage == "nine_votes":
        _edit_label(root, "FER2013Valid", lambda ls: [ls[0].rsplit(",", 1)[0], *ls[1:]])
    elif breakage == "bad_vote":
        _edit_label(root, "FER2013Valid", lambda ls: [ls[0][:-1] + "x", *ls[1:]])
    elif breakage == "negative_vote":
        _edit_label(root, "FER2013Valid", lambda ls: [ls[0][:-1] + "-1", *ls[1:]])
    elif breakage == "missing_image":
        (val / first).unlink()
    elif breakage == "truncated_image":
        data = (val / first).read_bytes()
        (val / first).write_bytes(data[: len(data) // 2])
    elif breakage == "not_an_image":
        (val / first).write_text("hello")
    elif breakage == "binary_label":
        (val / "label.csv").write_bytes((val / first).read_bytes())  # a PNG as label.csv
    elif breakage == "label_is_folder":
        (val / "label.csv").unlink()
        (val / "label.csv").mkdir()
    elif breakage == "wrong_size":
        from PIL import Image

        Image.fromarray(np.zeros((40, 48), np.uint8)).save(val / first)
    elif breakage == "empty_folder":
        shutil.rmtree(val)
        val.mkdir()
    with pytest.raises(DataError, match=message) as info:
        load_dataset("ferplus", root, "val", cache_dir=cache)
    text = str(info.value)
    assert "FER2013Valid" in text
    if breakage in ("missing_image", "truncated_image", "not_an_image", "wrong_size"):
        assert first in text
    # nothing half-written in the cache
    leftovers = list((cache / "ferplus").iterdir()) if (cache / "ferplus").exists() else []
    assert leftovers == []


def test_unknown_split_and_mode(fer):
    root, _, cache = fer
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("ferplus", root, "dev", cache_dir=cache)
    with pytest.raises(ValueError, match="unknown label mode"):
        load_dataset("ferplus", root, "train", label_mode="vote", cache_dir=cache)


# --------------------------------------------------------------------------- pack
def test_med_codec_round_trip():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (50, 48, 48), dtype=np.uint8)
    imgs[0] = 0
    imgs[1] = 255
    imgs[2] = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))
    assert np.array_equal(P.med_decode(P.med_encode(imgs)), imgs)


def test_pack_round_trip_equals_folder(fer, tmp_path):
    root, _, cache = fer
    out = tmp_path / "fer.npz"
    meta = P.pack(root, out, cache_dir=cache, preset=1)
    assert meta["label_modes"] == ["majority"]
    for split in FER_FOLDERS:
        a = load_dataset("ferplus", out, split)
        b = load_dataset("ferplus", root, split, cache_dir=cache)
        assert compare(a, b) == ""
    with pytest.raises(DataError, match="include-soft"):
        load_dataset("ferplus", out, "train", label_mode="crossentropy")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pack_with_soft_modes(fer, tmp_path):
    root, _, cache = fer
    out = tmp_path / "fer_soft.npz"
    P.pack(root, out, include_soft=True, cache_dir=cache, preset=1)
    for mode in ("majority", "crossentropy", "probability"):
        for split in FER_FOLDERS:
            a = load_dataset("ferplus", out, split, label_mode=mode)
            b = load_dataset("ferplus", root, split, label_mode=mode, cache_dir=cache)
            assert compare(a, b) == "", (mode, split)


def _rewrite_pack(src: Path, dst: Path, **changes) -> None:
    """Copy the arrays of pack ``src`` to ``dst``, replacing or (value None) dropping some."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(dst, **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize("breakage, message", [
    ("truncated", "not an .npz"),
    ("text", "not an .npz"),
    ("npy", "not an .npz"),
    ("other_npz", "lacks the array"),
    ("format", "not a FERPlus pack of format"),
    ("meta_json", "unreadable FERPlus pack"),
    ("meta_keys", "malformed meta"),
    ("sizes", "inconsistent"),
    ("votes", "inconsistent"),
])
def test_corrupt_pack_is_refused(fer, tmp_path, breakage, message):
    root, _, cache = fer
    out = tmp_path / "fer.npz"
    P.pack(root, out, cache_dir=cache, preset=1)
    bad = tmp_path / "bad.npz"
    if breakage == "truncated":
        data = out.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif breakage == "text":
        bad.write_text("root:x:0:0:root:/root:/bin/bash\n")
    elif breakage == "npy":
        with bad.open("wb") as fh:
            np.save(fh, np.zeros(3))  # an .npy, not an .npz
    elif breakage == "other_npz":
        np.savez(bad, x=np.zeros(3))
    elif breakage == "format":
        _rewrite_pack(out, bad, format=np.array("cfdan-ferplus-pack/0"))
    elif breakage == "meta_json":
        _rewrite_pack(out, bad, meta=np.array("{not json"))
    elif breakage == "meta_keys":
        _rewrite_pack(out, bad, meta=np.array(json.dumps({"image_shape": [48, 48]})))
    elif breakage == "sizes":
        _rewrite_pack(out, bad, split_sizes=np.array([1, 2, 3], dtype=np.int64))
    elif breakage == "votes":
        with np.load(out) as z:
            _rewrite_pack(out, bad, votes=z["votes"][:, :9])
    with pytest.raises(DataError, match=message) as info:
        load_dataset("ferplus", bad, "train")
    assert str(bad) in str(info.value)


def test_pack_and_folder_readers_stay_apart(fer, tmp_path):
    """load_dataset picks the reader; the folder reader names a file it is handed."""
    root, _, cache = fer
    out = tmp_path / "fer.npz"
    P.pack(root, out, cache_dir=cache, preset=1)
    with pytest.raises(DataError, match="is a file") as info:
        F.load(out, "val")
    assert str(out) in str(info.value)
    a = load_dataset("ferplus", out, "val", cache_dir=tmp_path / "unused", use_cache=False)
    assert compare(a, F.load(root, "val", cache_dir=cache)) == ""
    assert not (tmp_path / "unused").exists()
    with pytest.raises(TypeError, match="sizes"):
        load_dataset("ferplus", out, "val", sizes=(1, 1, 1))
    with pytest.raises(TypeError, match="sizes"):
        load_dataset("ferplus", root, "val", sizes=(1, 1, 1))


def test_default_root_is_read_at_call_time(fer, monkeypatch):
    root, written, cache = fer
    monkeypatch.setenv("CFDAN_FERPLUS_ROOT", str(root))
    ds = load_dataset("ferplus", None, "val", cache_dir=cache)
    assert ds.ids == list(written["val"]["expected"]) and ds.info["root"] == str(root)


def test_default_cache_is_read_at_call_time(fer, tmp_path, monkeypatch):
    root, _, _ = fer
    monkeypatch.setenv("CFDAN_CACHE_DIR", str(tmp_path / "env-cache"))
    load_dataset("ferplus", root, "val")
    assert len(list((tmp_path / "env-cache" / "ferplus").iterdir())) == 1


# --------------------------------------------------------------------------- CLI
def test_cli_check_and_pack(fer, tmp_path, capsys):
    from cfdan.cli import main

    root, written, cache = fer
    record = tmp_path / "counts.json"
    rc = main(["data", "check", "--dataset", "ferplus", "--root", str(root),
               "--cache-dir", str(cache), "--record", str(record)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "happiness" in out
    summary = json.loads(record.read_text())
    assert summary["splits"]["val"]["images"] == len(written["val"]["expected"])
    rc = main(["data", "pack", "--root", str(root), "--out", str(tmp_path / "p.npz"),
               "--cache-dir", str(cache), "--preset", "1"])
    assert rc == 0 and "verified" in capsys.readouterr().out
    shutil.rmtree(root / "FER2013Test")
    rc = main(["data", "check", "--dataset", "ferplus", "--root", str(root),
               "--cache-dir", str(cache)])
    assert rc == 2  # a DataError: bad input, one line
    err = capsys.readouterr().err
    assert "FER2013Test" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("root", ["text_file", "missing"])
def test_cli_check_names_a_bad_root(root, tmp_path, capsys):
    from cfdan.cli import main

    path = tmp_path / "passwd" if root == "text_file" else tmp_path / "nonexistent"
    if root == "text_file":
        path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    rc = main(["data", "check", "--dataset", "ferplus", "--root", str(path),
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and len(err.strip().splitlines()) == 1
    assert ("not a FERPlus pack" in err) if root == "text_file" else ("does not exist" in err)


# --------------------------------------------------------------------------- real data
@pytest.mark.ferplus
def test_real_ferplus_majority_counts(ferplus_root, tmp_path):
    sizes = {}
    for split in ("train", "val", "test"):
        ds = load_dataset("ferplus", ferplus_root, split)  # cache: cfdan.paths.cache_dir()
        sizes[split] = len(ds)
        if split == "test":
            counts = ds.class_counts()
    # the counts published with the data (README) for the majority-vote protocol
    assert sizes == {"train": 25045, "val": 3191, "test": 3137}
    assert counts == {"neutral": 1083, "happiness": 892, "surprise": 394, "sadness": 382,
                      "anger": 269, "disgust": 16, "fear": 86, "contempt": 15}


def test_store_entry_tolerates_a_concurrent_writer(tmp_path):
    from cfdan.data import cache as C

    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    C.store_entry(tmp_path, "ns", "k1", {"images": arr}, {"source": "s"})
    C.store_entry(tmp_path, "ns", "k1", {"images": arr}, {"source": "s"})  # same key again
    arrays, meta = C.load_entry(tmp_path, "ns", "k1")
    assert np.array_equal(arrays["images"], arr) and meta["key"] == "k1"
    assert [p.name for p in (tmp_path / "ns").iterdir()] == ["k1"]


@pytest.mark.ferplus
def test_real_images_compress_within_the_pack_budget(ferplus_root):
    """The pack codec on 2,000 real majority-vote images, extrapolated to all 31,373."""
    import lzma

    if ferplus_root.is_file():
        pytest.skip("needs the FER+ folder layout")
    d = F.decode_folder(ferplus_root / "FER2013Valid", use_cache=False)
    keep, _ = F.majority_labels(d["votes"])
    imgs = np.asarray(d["images"])[keep][:2000]
    residuals = P.med_encode(imgs)
    assert np.array_equal(P.med_decode(residuals), imgs)
    per_image = len(lzma.compress(residuals.tobytes(), preset=6)) / len(imgs)
    assert per_image * 31373 < 55e6 * 0.97  # leave room for names and votes
    assert per_image < imgs[0].size  # it does compress
