"""Model tests (§3): shapes, gradients, determinism, switches, checkpoint loader, cost."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cfdan.model import CFDAN, PRESETS, CFDANConfig, preset
from cfdan.model.trunk import ResNetTrunk, load_pretrained

SMALL = dict(image_size=48, trunk_stem="cifar", trunk_width=8, trunk_blocks=(1, 1, 1, 1),
             channel_groups=4)


def _small(name: str = "full", **kw) -> CFDAN:
    torch.manual_seed(0)
    return CFDAN(preset(name, **{**SMALL, **kw}))


def _x(n: int = 2, size: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_finite_logits(name: str) -> None:
    for classes in (7, 8):
        m = _small(name, num_classes=classes).eval()
        y = m(_x())
        assert y.shape == (2, classes)
        assert torch.isfinite(y).all()


def test_full_model_224_forward_backward_batch2() -> None:
    torch.manual_seed(0)
    m = CFDAN(CFDANConfig())
    y = m(torch.randn(2, 3, 224, 224))
    assert y.shape == (2, 8)
    y.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("name", ["full", "baseline", "dam", "learnable_pcp", "cbm_identity",
                                  "act_relu_no_ilm", "no_distill"])
def test_every_parameter_receives_a_gradient(name: str) -> None:
    m = _small(name)
    for mod in m.trunk.modules():  # undo the zero-init of residual BNs so every path is live
        if isinstance(mod, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(mod.weight)
    m(_x()).square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_cpu_determinism_under_a_seed() -> None:
    a, b = _small(), _small()
    assert torch.equal(a(_x()), b(_x()))
    c = CFDAN(preset("full", **SMALL))  # unseeded init differs
    assert not torch.equal(a(_x()), c(_x()))


def _same_weights(a: CFDAN, b: CFDAN) -> CFDAN:
    b.load_state_dict(a.state_dict())
    return b.eval()


def test_cross_fusion_switch_exchanges_keys() -> None:
    on = _small().eval()
    off = _same_weights(on, _small(cross_fusion=False))
    x = _x()
    assert not torch.allclose(on(x), off(x))
    # Off: the channel branch never uses the spatial block's key projection (and vice versa).
    with torch.no_grad():
        base = off.attention(*off.tokens(x))
        off.attention.spatial[1].k.weight.add_(1.0)
        moved = off.attention(*off.tokens(x))
    assert torch.equal(base[1], moved[1])  # channel output unchanged
    assert not torch.equal(base[0], moved[0])
    # On: the same perturbation reaches the channel branch through K_s (eq. 3).
    with torch.no_grad():
        base = on.attention(*on.tokens(x))
        on.attention.spatial[1].k.weight.add_(1.0)
        moved = on.attention(*on.tokens(x))
    assert not torch.equal(base[1], moved[1])


@pytest.mark.parametrize("field,value", [("activation", "sigmoid"), ("activation", "relu"),
                                         ("fusion", "cam"), ("fusion", "sum"), ("cbm", "identity"),
                                         ("spatial_window", None), ("closed_loop", False),
                                         ("distill_position", "post"), ("pcp_s_L", 1.75)])
def test_each_switch_changes_the_computation(field: str, value: object) -> None:
    a = _small().eval()
    b = CFDAN(dataclasses.replace(a.cfg, **{field: value}))
    b.load_state_dict(a.state_dict(), strict=False)
    assert not torch.allclose(a(_x()), b.eval()(_x()))


def test_distillation_shrinks_keys_and_values() -> None:
    m = _small().eval()
    w = m(_x(), return_attention=True)["attention"]
    s, c = w["spatial_weights"][0], w["channel_weights"][0]
    # 6x6 grid, window 4 -> 4 windows of 16 queries, pooled keys 2x2 per window
    assert s.shape[-2:] == (16, 4)
    cw = m.cfg.dim // m.cfg.channel_groups
    assert c.shape[-2:] == (cw, cw // m.cfg.distill_reduction)
    nd = _small(distill=False).eval()
    w = nd(_x(), return_attention=True)["attention"]
    assert w["spatial_weights"][0].shape[-2:] == (16, 16)
    assert w["channel_weights"][0].shape[-2:] == (cw, cw)


def test_spatial_windows_do_not_attend_to_padding() -> None:
    m = _small(distill=False).eval()
    w = m(_x(), return_attention=True)["attention"]["spatial_weights"][0]
    # window 3 of the padded 8x8 grid holds rows/cols 4..7; only 4..5 are real -> 4 real keys
    assert torch.allclose(w.sum(-1), torch.ones(()))
    assert (w[:, 3, :, 0, :] > 0).sum(-1).max() == 4


def test_attention_maps_and_features() -> None:
    """Fig. 8 maps (v2; tests/test_attention_maps.py checks their definitions)."""
    out = _small()(_x(), return_attention=True, return_features=True)
    a = out["attention"]
    for key in ("spatial", "channel", "fused"):
        assert a[key].shape == (2, 6, 6) and torch.isfinite(a[key]).all()
    assert float(a["spatial"].min()) >= 0.0  # attention received: a distribution over cells
    assert torch.allclose(a["spatial"].sum((1, 2)), torch.ones(2))
    assert a["definition"] == "v2"
    assert out["features"].shape == (2, 64)
    base = _small("baseline")(_x(), return_attention=True)["attention"]
    assert base["channel"] is None and base["spatial"].shape == (2, 6, 6)


def test_config_validation_and_presets() -> None:
    with pytest.raises(ValueError, match="activation"):
        CFDANConfig(activation="gelu")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")
    with pytest.raises(ValueError, match="unknown CFDANConfig field"):
        preset("full", widht=3)
    with pytest.raises(ValueError, match="channel_groups"):
        CFDANConfig(channel_groups=7)
    cfg = preset("full", **SMALL)
    assert CFDANConfig.from_dict(cfg.to_dict()) == cfg
    assert CFDANConfig().grid == 7
    with pytest.raises(ValueError, match="grid"):
        _small()(_x(size=64))


def test_pretrained_loader_paths(tmp_path) -> None:
    trunk = ResNetTrunk(8, (1, 1, 1, 1), "cifar")
    good = {f"module.{k}": v for k, v in trunk.state_dict().items()}
    good["module.fc.weight"] = torch.zeros(10, 64)
    torch.save({"state_dict": good}, tmp_path / "good.pt")
    fresh = ResNetTrunk(8, (1, 1, 1, 1), "cifar")
    load_pretrained(fresh, tmp_path / "good.pt")
    assert torch.equal(fresh.conv1.weight, trunk.conv1.weight)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pretrained(fresh, tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_pretrained(fresh, tmp_path / "junk.pt")
    partial = dict(trunk.state_dict())
    partial.pop("conv1.weight")
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"missing keys \['conv1.weight'\].*extra.weight"):
        load_pretrained(fresh, tmp_path / "partial.pt")
    wide = ResNetTrunk(16, (1, 1, 1, 1), "cifar").state_dict()
    torch.save(wide, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained(fresh, tmp_path / "wide.pt")
    full_cfg = preset("full", **SMALL, pretrained=str(tmp_path / "good.pt"))
    assert torch.equal(CFDAN(full_cfg).trunk.conv1.weight, trunk.conv1.weight)


def test_cost_matches_the_paper_within_5_percent() -> None:
    """Table 2 (16.4M, 2.0G) and Table 5 without distillation (4.2M, 0.21G)."""
    from cfdan.model.cost import measure

    full = measure(CFDANConfig())
    assert abs(full["total"].params_m / 16.4 - 1) < 0.05
    assert abs(full["total"].gmacs / 2.0 - 1) < 0.05
    nd = measure(preset("no_distill"))["attention"]
    assert abs(nd.params_m / 4.2 - 1) < 0.05
    assert abs(nd.gmacs / 0.21 - 1) < 0.05
    d = measure(CFDANConfig())["attention"]
    assert abs(d.params_m / 4.22 - 1) < 0.05
    assert d.gmacs < nd.gmacs  # distillation saves FLOPs (paper: 0.14G; see chapter 2)


def test_channel_conv3_equals_the_one_channel_convolution():
    from cfdan.model.distillation import ChannelDistill, channel_conv3

    torch.manual_seed(0)
    d = ChannelDistill(32, 4, 2)
    z = torch.randn(3, 5, 4, 4, requires_grad=True)
    ref = d.conv3(z.reshape(-1, 1, 4)).reshape(z.shape)
    out = channel_conv3(z, d.conv3.weight)
    torch.testing.assert_close(out, ref)
    g_out = torch.autograd.grad(out.square().sum(), [z, d.conv3.weight])
    g_ref = torch.autograd.grad(ref.square().sum(), [z, d.conv3.weight])
    for a, b in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["full", "baseline", "no_distill", "no_grouping"])
def test_fused_attention_equals_the_explicit_weights(name):
    """Training runs the fused kernel (no weights kept); maps use the explicit softmax."""
    torch.manual_seed(0)
    m = _small(name)
    x = torch.randn(2, 3, SMALL["image_size"], SMALL["image_size"], requires_grad=True)
    fused = m(x)
    explicit = m(x, return_attention=True)["logits"]
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    g1 = torch.autograd.grad(fused.sum(), x)[0]
    g2 = torch.autograd.grad(explicit.sum(), x)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
