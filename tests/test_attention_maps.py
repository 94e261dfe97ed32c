"""Fig. 8's maps (cfdan.model.network, chapter 2 "What Fig. 8 shows") on models whose attention
is set by hand, and the figure (cfdan.analysis.attention_maps) with and without the dataset."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from data_fixtures import make_ferplus
from records import save_run

from cfdan import results
from cfdan.analysis import attention_maps
from cfdan.data import load_dataset
from cfdan.model import CFDAN, preset
from cfdan.model.network import ATTENTION_DEFINITION, cam_constant, received_attention

matplotlib.use("Agg")

# 48 px, CIFAR stem: a 6 x 6 token grid of C = 64; window 4 pads it to 8 x 8 (4 windows of
# 16, 8, 8 and 4 real queries); distillation pools the keys to 3 x 3 (windows of 2 x 2).
SMALL = dict(image_size=48, trunk_stem="cifar", trunk_width=8, trunk_blocks=(1, 1, 1, 1),
             channel_groups=4)
HW = (6, 6)


def _model(name: str = "full", **kw) -> CFDAN:
    torch.manual_seed(0)
    return CFDAN(preset(name, **{**SMALL, **kw})).eval()


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 48, 48, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- spatial map
def test_received_attention_spreads_a_pooled_key_over_its_cells() -> None:
    """Hand-made weights: every query of window 0 gives all its weight to key slot 3 (pooled
    cell (1, 1), grid cells 2-3 x 2-3); the other windows attend uniformly to their real keys."""
    from cfdan.model.attention import windows

    w = torch.zeros(1, 4, 1, 16, 4)
    w[0, 0, 0, :, 3] = 1.0
    _, kvalid = windows(torch.zeros(1, 9, 1), (3, 3), 2, 2, 2)
    for g in (1, 2, 3):
        w[0, g, 0, :, kvalid[g]] = 1.0 / int(kvalid[g].sum())
    m = received_attention(w, HW, window=4, pool=2)[0]
    assert m.shape == HW
    assert float(m.sum()) == pytest.approx(1.0)
    # window 0 has 16 of the 36 real queries: 16/36 on one pooled key, 1/4 of it per cell
    assert torch.allclose(m[2:4, 2:4], torch.full((2, 2), 16 / 36 / 4))
    assert m[0:2, 0:2].abs().max() == 0  # key slots 0-2 of window 0 got nothing
    peak = divmod(int(m.argmax()), HW[1])
    assert 2 <= peak[0] < 4 and 2 <= peak[1] < 4
    # windows 1-3: real queries 8, 8, 4 shared by their 2, 2, 1 real keys -> 1/36 per cell
    assert torch.allclose(m[4:, :], torch.full((2, 6), 1 / 36))
    assert torch.allclose(m[:4, 4:], torch.full((4, 2), 1 / 36))


def test_received_attention_leaves_padded_queries_out() -> None:
    """Padded queries of the last windows carry weights too (the explicit softmax gives them
    some); they must not count. Here they point at other keys than the real queries do."""
    from cfdan.model.attention import windows

    _, qvalid = windows(torch.zeros(1, 36, 1), HW, 4, 2, 2)
    w = torch.zeros(1, 4, 1, 16, 16)
    for g in range(4):
        w[0, g, 0, qvalid[g], 0] = 1.0  # real queries: all on the window's first key
        w[0, g, 0, ~qvalid[g], 5] = 1.0  # padded queries: elsewhere
    m = received_attention(w, HW, window=4, pool=None)[0]
    assert float(m.sum()) == pytest.approx(1.0)
    firsts = {(0, 0): 16, (0, 4): 8, (4, 0): 8, (4, 4): 4}  # first cell of each window
    for (r, c), n_real in firsts.items():
        assert float(m[r, c]) == pytest.approx(n_real / 36)
    assert float(m.sum() - sum(m[r, c] for r, c in firsts)) == pytest.approx(0.0, abs=1e-7)


def test_received_attention_rejects_weights_of_another_layout() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        received_attention(torch.ones(1, 4, 1, 16, 4) / 4, HW, window=4, pool=None)


@pytest.mark.parametrize("name", ["full", "no_distill", "no_grouping"])
def test_uniform_attention_gives_a_uniform_map(name: str) -> None:
    """Zero query projection: every real query weighs the real keys of its window equally.
    Each window's real keys then receive exactly its share of the real queries, so the map is
    flat (1/36 per cell) only if padded queries are left out and padded keys get nothing."""
    m = _model(name)
    blk = m.attention.spatial[-1]
    with torch.no_grad():
        blk.q.weight.zero_()
        blk.q.bias.zero_()
    spatial = m(_x(), return_attention=True)["attention"]["spatial"]
    assert spatial.shape == (2, *HW)
    torch.testing.assert_close(spatial, torch.full_like(spatial, 1 / 36))


@pytest.mark.parametrize("window", [None, 4])
def test_spatial_map_peaks_at_the_key_given_all_the_weight(window: int | None) -> None:
    """The last layer's keys are set by hand: zero everywhere but pooled key 4 (the 3 x 3
    grid's centre, cells 2-3 x 2-3), which is aligned with every query. Its window's queries
    then give it all their weight, and the map peaks on its cells."""
    m = _model(cross_fusion=False, spatial_window=window)
    blk = m.attention.spatial[-1]
    u = torch.linspace(-1, 1, m.cfg.dim)
    with torch.no_grad():
        blk.q.weight.zero_()
        blk.q.bias.copy_(u)
    hot = 4

    def set_keys(_mod, _inp, out):
        k = torch.zeros_like(out)
        k[:, hot] = 1000 * u / u.square().sum()  # score 1000 / sqrt(C) for every query
        return k

    handle = blk.k.register_forward_hook(set_keys)
    try:
        out = m(_x(), return_attention=True)["attention"]
    finally:
        handle.remove()
    w = out["spatial_weights"][-1]
    assert w.shape[-1] == (9 if window is None else 4)
    spatial = out["spatial"]
    for img in spatial:
        peak = divmod(int(img.argmax()), HW[1])
        assert 2 <= peak[0] < 4 and 2 <= peak[1] < 4
        share = 1.0 if window is None else 16 / 36  # window 0 holds 16 of 36 real queries
        torch.testing.assert_close(img[2:4, 2:4], torch.full((2, 2), share / 4),
                                   rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- CAM maps
@pytest.mark.parametrize("name", ["full", "baseline", "dam", "plain_cnn"])
def test_fused_cam_sums_to_the_predicted_logit_minus_the_constant(name: str) -> None:
    m = _model(name)
    out = m(_x(), return_attention=True)
    cls = out["logits"].argmax(1)
    total = out["attention"]["fused"].sum((1, 2)) + cam_constant(m.head_norm, m.head, cls)
    torch.testing.assert_close(total, out["logits"].gather(1, cls[:, None])[:, 0].detach(),
                               rtol=1e-5, atol=1e-5)


def test_channel_cam_is_the_head_applied_to_the_channel_branch() -> None:
    """The channel map uses the branch's own pooled statistics and the predicted class."""
    m = _model()
    x = _x()
    out = m(x, return_attention=True)
    cls = out["logits"].argmax(1)
    with torch.no_grad():
        _, a_c, _ = m.attention(*m.tokens(x))
        alone = m.head(m.head_norm(a_c.mean(1))).gather(1, cls[:, None])[:, 0]
    total = out["attention"]["channel"].sum((1, 2)) + cam_constant(m.head_norm, m.head, cls)
    torch.testing.assert_close(total, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out["attention"]["channel"], out["attention"]["fused"])


def test_cam_peaks_at_the_one_position_that_speaks_for_the_class() -> None:
    """Fused tokens set by hand: equal everywhere but one cell, whose extra vector e is what
    class 0's head weights read. That cell gets the largest share; all others are equal."""
    m = _model()
    e = torch.linspace(-1, 1, m.cfg.dim)
    hot = 14
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.weight[0] = e
        m.head.bias.zero_()
        m.head.bias[0] = 10.0  # class 0 is predicted

    def fused_tokens(a_s, a_c):
        t = torch.ones_like(a_s) * torch.cos(torch.arange(m.cfg.dim, dtype=a_s.dtype))
        t[:, hot] += 5 * e
        return t

    m.fusion.forward = fused_tokens
    out = m(_x(), return_attention=True)
    assert (out["logits"].argmax(1) == 0).all()
    for img in out["attention"]["fused"].flatten(1):
        assert int(img.argmax()) == hot
        rest = torch.cat([img[:hot], img[hot + 1:]])
        torch.testing.assert_close(rest, torch.full_like(rest, float(rest[0])))


def test_maps_keep_the_record_keys_and_name_their_definition() -> None:
    from cfdan.training import evaluate

    m = _model()
    imgs = torch.randint(0, 256, (3, 1, 48, 48), dtype=torch.uint8)
    arrays = evaluate.attention_maps(m, imgs, lambda u: u.float().expand(-1, 3, -1, -1) / 255)
    for key in ("attention_spatial", "attention_channel", "attention_fused"):
        assert arrays[key].shape == (3, *HW) and arrays[key].dtype == np.float32
    assert str(arrays["attention_definition"]) == ATTENTION_DEFINITION == "v2"


def test_training_path_keeps_the_fused_kernel() -> None:
    """Without return_attention the spatial blocks keep no weights (fused kernel); with it
    they keep the explicit softmax's."""
    m = _model()
    t, hw = m.tokens(_x())
    assert m.attention(t, hw, need_weights=False)[2]["spatial"] == []
    assert len(m.attention(t, hw, need_weights=True)[2]["spatial"]) == m.cfg.num_layers


# --------------------------------------------------------------------------- the figure
@pytest.fixture
def fake_ferplus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake FER+ folder, caches and a results store, all under ``tmp_path``."""
    root = tmp_path / "ferplus"
    make_ferplus(root)
    monkeypatch.setenv("CFDAN_FERPLUS_ROOT", str(root))
    monkeypatch.setenv("CFDAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CFDAN_RESULTS_DIR", str(tmp_path / "results"))
    return root


def _store_run(run_id: str, test, index: list[int], definition: str | None = "v2",
               fingerprint: str | None = None) -> None:
    rng = np.random.default_rng(0)
    k = len(index)
    arrays = {
        "class_names": np.asarray(test.class_names),
        "attention_index": np.asarray(index, dtype=np.int64),
        "attention_labels": test.labels.numpy()[index],
        "attention_preds": test.labels.numpy()[index],
        "attention_spatial": rng.random((k, *HW)).astype(np.float32),
        "attention_channel": rng.normal(size=(k, *HW)).astype(np.float32),
        "attention_fused": rng.normal(size=(k, *HW)).astype(np.float32),
    }
    if definition:
        arrays["attention_definition"] = np.asarray(definition)
    rec = {"experiment": "fig8", "run_id": run_id, "variant": "full", "seed": 0,
           "config": {"data": {"dataset": "ferplus", "image_size": 48,
                               "label_mode": "majority", "max_eval": 0}},
           "data": {"dataset": "ferplus",
                    "fingerprint": {"test": fingerprint or test.fingerprint}}}
    results.save_record(rec, arrays)


def _bar_colours(cax):
    """The coloured mesh of a colour bar's axes."""
    from matplotlib.collections import QuadMesh

    return next(c for c in cax.collections if isinstance(c, QuadMesh))


def test_faces_are_read_from_the_dataset_by_index(fake_ferplus: Path) -> None:
    test = load_dataset("ferplus", fake_ferplus, "test", image_size=48)
    _store_run("withdata", test, [0, 3])
    faces, note = attention_maps.attention_faces("withdata", "fig8")
    assert faces is not None and np.array_equal(faces, test.images[[0, 3]].numpy())
    assert "read from the FERPlus test split" in note
    fig = attention_maps.attention_figures({"fig8": "withdata"}, k=2)[0]
    caption = fig.texts[-1].get_text()
    assert "read from the FERPlus test split" in caption and "v2" in caption
    assert len(fig.axes[0].images) == 1 and len(fig.axes[1].images) == 2  # face; face + map
    bar = _bar_colours(fig.axes[5].child_axes[0])  # under the last row's spatial map
    assert bar.get_alpha() == fig.axes[5].images[-1].get_alpha() == 0.5  # as the map drawn
    plt.close("all")


def test_without_the_dataset_the_maps_stand_alone_and_say_why(
        fake_ferplus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test = load_dataset("ferplus", fake_ferplus, "test", image_size=48)
    _store_run("nodata", test, [0, 3])
    with_data = attention_maps.attention_figures({"fig8": "nodata"}, k=2)[0]
    monkeypatch.setenv("CFDAN_FERPLUS_ROOT", str(tmp_path / "absent"))
    faces, note = attention_maps.attention_faces("nodata", "fig8")
    assert faces is None and "FERPlus is not at" in note
    fig = attention_maps.attention_figures({"fig8": "nodata"}, k=2)[0]
    caption = fig.texts[-1].get_text().replace("\n", " ")
    assert caption.startswith("Maps alone: FERPlus is not at")
    assert len(fig.axes[0].images) == 0 and len(fig.axes[1].images) == 1  # map, no face
    # the same layout either way, so the notebook's text output does not depend on the data
    assert repr(fig) == repr(with_data)
    plt.close("all")


def test_each_map_column_gets_one_colour_bar_on_a_shared_per_face_scale(
        fake_ferplus: Path) -> None:
    test = load_dataset("ferplus", fake_ferplus, "test", image_size=48)
    _store_run("bars", test, [0, 3])
    fig = attention_maps.attention_figures({"fig8": "bars"}, k=2, show_faces=False)[0]
    grid = np.asarray(fig.axes[:8]).reshape(2, 4)
    assert [len(ax.child_axes) for ax in grid[0]] == [0, 0, 0, 0]  # bars under the last row
    assert [len(ax.child_axes) for ax in grid[1]] == [0, 1, 1, 1]  # none for the face column
    spatial, channel = grid[1, 1].child_axes[0], grid[1, 2].child_axes[0]
    assert spatial.get_xlim() == (0.0, 1.0) and channel.get_xlim() == (-1.0, 1.0)
    assert _bar_colours(spatial).get_alpha() in (None, 1.0)  # maps alone: opaque
    assert "max" in spatial.get_xlabel() and "for (+)" in channel.get_xlabel()
    for row in grid:  # each face's class map is scaled to its own largest |value|
        cam = row[2].images[-1]
        assert cam.get_clim() == (-1.0, 1.0)
        assert np.isclose(np.abs(cam.get_array()).max(), 1.0)
    plt.close("all")


def test_a_test_split_that_is_not_the_runs_is_not_used(fake_ferplus: Path) -> None:
    test = load_dataset("ferplus", fake_ferplus, "test", image_size=48)
    _store_run("otherdata", test, [0, 1], fingerprint="0123456789abcdef")
    faces, note = attention_maps.attention_faces("otherdata", "fig8")
    assert faces is None and "is not the run's" in note


def test_old_records_are_labelled_token_norms(fake_ferplus: Path) -> None:
    test = load_dataset("ferplus", fake_ferplus, "test", image_size=48)
    _store_run("old", test, [0, 1], definition=None)
    assert attention_maps.attention_definition(results.load_arrays("old", "fig8")) == \
        attention_maps.ATTENTION_OLD == "token norms (old records)"
    fig = attention_maps.attention_figures({"fig8": "old"}, k=2)[0]
    caption = fig.texts[-1].get_text().replace("\n", " ")
    assert "token norms" in caption and "old records" in caption
    assert fig.axes[1].get_title() == "spatial (norm)"
    plt.close("all")


def test_committed_default_draws_no_face_even_with_the_dataset(fake_ferplus: Path) -> None:
    test = load_dataset("ferplus", fake_ferplus, "test", image_size=48)
    _store_run("hidden", test, [0, 3])
    fig = attention_maps.attention_figures({"fig8": "hidden"}, k=2, show_faces=False)[0]
    caption = fig.texts[-1].get_text().replace("\n", " ")
    assert "not redistributed" in caption
    assert len(fig.axes[0].images) == 0 or len(fig.axes[1].images) == 1  # maps alone
    plt.close("all")


def test_photo_maps_are_stored_beside_a_record_and_drawn_as_a_second_row(store, tmp_path,
                                                                        capsys):
    import matplotlib

    matplotlib.use("Agg")
    from cfdan import predict
    from cfdan.analysis import attention_maps
    from cfdan.cli import main

    if not predict.DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped model is not in models/")
    rec = save_run(store, "paper_table3", "full", 1, 80.0)
    npz = store / "paper_table3" / f"{rec['run_id']}{attention_maps.PHOTO_SUFFIX}"
    assert main(["photo-maps", str(predict.DEFAULT_CHECKPOINT), str(npz)]) == 0
    orphan = store / "paper_table3" / f"no_record{attention_maps.PHOTO_SUFFIX}"
    orphan.write_bytes(npz.read_bytes())  # maps without a record are not shown
    stored = attention_maps.stored_photo_maps()
    assert [k for k, _ in stored] == [f"paper_table3/{rec['run_id']}"]
    maps = attention_maps.photo_maps()
    for k in ("face", "probs", "spatial", "channel", "fused"):
        np.testing.assert_array_equal(stored[0][1][k], maps[k])
    assert float(maps["probs"].sum()) == pytest.approx(1.0, abs=1e-5)
    assert attention_maps.photo_facts() == {"photo_stored_rows": 1}
    fig = attention_maps.photo_attention_figure()
    assert len(fig.axes) >= 8  # two rows of four panels (plus colour bars)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("shipped cpu-profile model (48 px)") for t in titles)
    assert any(t.startswith(f"paper_table3/{rec['run_id']} (48 px)") for t in titles)
    plt.close("all")
    assert main(["photo-maps", "--photo", str(tmp_path / "nope.png"),
                 str(predict.DEFAULT_CHECKPOINT), str(tmp_path / "x.photo.npz")]) != 0
    assert "nope.png does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.photo.npz").exists()


def test_photo_attention_figure_draws_the_maps_over_a_real_face():
    import matplotlib

    matplotlib.use("Agg")
    from cfdan import predict
    from cfdan.analysis import attention_maps

    if not predict.DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped model is not in models/")
    fig = attention_maps.photo_attention_figure()
    assert fig is not None
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[1:] == ["spatial", "channel", "fused"]
    assert titles[0].splitlines()[1].split(" (")[0] in predict.load_checkpoint()[1]["class_names"]
