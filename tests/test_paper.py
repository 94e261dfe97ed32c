"""The paper's tables (cfdan.paper): labelled, looked up and relabelled without mixing."""

from __future__ import annotations

import pandas as pd
import pytest

from cfdan import paper

TABLES = ("table1", "table2", "table3", "table4", "table5")


@pytest.mark.parametrize("name", TABLES)
def test_every_table_is_labelled_paper(name):
    df = paper.table(name)
    assert (df["source"] == paper.PAPER).all()
    assert list(df.columns[1:]) == paper.COLUMNS[name]
    assert paper.value_columns(name)
    assert not set(paper.value_columns(name)) & set(paper.KEY_COLUMNS)


def test_value_reads_the_quoted_rows():
    cfdan_row = next(r for r in paper.TABLE2 if r[0] == paper.CFDAN)
    assert paper.value("table2", "params_M") == cfdan_row[2]
    assert paper.value("table2", "FLOPs_G") == cfdan_row[3]
    for method, preset, *_acc, params, flops in paper.TABLE5:
        assert paper.value("table5", "FLOPs_G", preset, by="preset") == flops
        assert paper.value("table5", "params_M", method) == params


def test_value_refuses_unknown_rows_columns_and_tables():
    with pytest.raises(KeyError, match="rows"):
        paper.value("table2", "params_M", "no such method")
    with pytest.raises(KeyError, match="number column"):
        paper.value("table2", "venue")
    with pytest.raises(ValueError, match="unknown paper table"):
        paper.table("table9")


@pytest.mark.parametrize("name", TABLES)
def test_label_columns_marks_every_number_once(name):
    df = paper.table(name).drop(columns=["source"])
    once = paper.label_columns(df, name)
    for col in paper.value_columns(name):
        assert f"paper {col}" in once.columns and col not in once.columns
    assert list(paper.label_columns(once, name).columns) == list(once.columns)  # idempotent
    keys = [c for c in df.columns if c in paper.KEY_COLUMNS]
    assert once[keys].equals(df[keys])


def test_label_columns_leaves_other_columns_alone():
    df = pd.DataFrame({"preset": ["full"], "ours (table5)": ["not run"], "FLOPs_G": [0.14]})
    out = paper.label_columns(df, "table5")
    assert list(out.columns) == ["preset", "ours (table5)", "paper FLOPs_G"]
