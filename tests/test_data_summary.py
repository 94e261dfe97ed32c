"""The data chapter's tables (cfdan.data.summary): class orders and recorded counts."""

from __future__ import annotations

import json

from data_fixtures import make_ferplus

from cfdan.data import affectnet, ferplus, rafdb, summary, synthetic
from cfdan.data.commands import check


def test_class_orders_has_every_reader_in_its_order():
    df = summary.class_orders()
    assert list(df["FERPlus"]) == list(ferplus.CLASS_NAMES)
    assert list(df["AffectNet (8)"]) == list(affectnet.CLASS_NAMES)
    assert list(df["synthetic"]) == list(synthetic.CLASS_NAMES)
    assert list(df["RAF-DB"][: len(rafdb.CLASS_NAMES)]) == list(rafdb.CLASS_NAMES)


def _record(tmp_path):
    root, cache = tmp_path / "ferplus", tmp_path / "cache"
    make_ferplus(root)
    rec = check("ferplus", str(root), cache_dir=str(cache))
    path = tmp_path / "counts.json"
    path.write_text(json.dumps(rec))
    return root, cache, path


def test_counts_table_and_facts_agree_with_the_record(tmp_path):
    root, cache, path = _record(tmp_path)
    rec = summary.read_counts(path)
    table = summary.counts_table(rec)
    facts = summary.count_facts(rec)
    for split, v in rec["splits"].items():
        assert table.loc["total", split] == v["images"] == facts[f"ferplus_{split}_images"]
        for name, n in v["class_counts"].items():
            assert table.loc[name, split] == n == facts[f"ferplus_{split}_{name}"]
    assert facts["ferplus_image_px"] == rec["splits"]["test"]["image_shape"][-1] == 48


def test_live_counts_equal_notices_a_changed_record(tmp_path):
    root, cache, path = _record(tmp_path)
    rec = summary.read_counts(path)
    assert summary.live_counts_equal(root, rec, cache_dir=cache)
    rec["splits"]["test"]["class_counts"]["neutral"] += 1
    assert not summary.live_counts_equal(root, rec, cache_dir=cache)


def test_read_counts_defaults_to_the_store(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ferplus_counts.json").write_text('{"splits": {}}')
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path))
    assert summary.read_counts() == {"splits": {}}
