"""CF-DAN (Fig. 2): trunk -> tokens (+ positions) -> cross-fusion dual attention -> ILM -> head."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .config import CFDANConfig
from .cross_fusion import DualAttention
from .ilm import Fusion
from .trunk import ResNetTrunk, load_pretrained


def component_seed(init_seed: int, name: str) -> int:
    """The seed of component ``name``'s initial weights under paired initialisation."""
    digest = hashlib.sha256(f"{init_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


@contextmanager
def _init_rng(init_seed: int | None, name: str) -> Iterator[None]:
    """Draw the weights built inside from ``(init_seed, name)``; global RNG when None."""
    if init_seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(component_seed(init_seed, name))
        yield


class CFDAN(nn.Module):
    """The cross-fusion dual-attention network; ``forward`` returns logits (N, num_classes).

    ``init_seed`` (not part of the architecture) pairs ablation variants: when given, each
    component (trunk, positions, attention, fusion, head) draws its initial weights from its
    own generator seeded by ``(init_seed, component)``, so two variants built with the same
    seed start from identical weights in every component they share. ``None`` draws everything
    from torch's global generator in construction order.
    """

    def __init__(self, cfg: CFDANConfig | None = None, init_seed: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CFDANConfig()
        with _init_rng(init_seed, "trunk"):
            self.trunk = ResNetTrunk(cfg.trunk_width, cfg.trunk_blocks, cfg.trunk_stem,
                                     cfg.in_chans)
        if cfg.pretrained:
            load_pretrained(self.trunk, cfg.pretrained)
        self.grid = (cfg.grid, cfg.grid)
        self.pos_embed = (nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid, cfg.dim))
                          if cfg.pos_embed else None)
        if self.pos_embed is not None:
            with _init_rng(init_seed, "pos_embed"):
                nn.init.trunc_normal_(self.pos_embed, std=0.02)
        with _init_rng(init_seed, "attention"):
            self.attention = DualAttention(cfg)
        with _init_rng(init_seed, "fusion"):
            self.fusion = Fusion(cfg) if cfg.attention == "dual" else None
        with _init_rng(init_seed, "head"):
            self.head_norm = nn.LayerNorm(cfg.dim)
            self.dropout = nn.Dropout(cfg.dropout)
            self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Trunk feature map reshaped to P x C tokens (§3.1), with positional coding."""
        f = self.trunk(x)
        hw = (f.shape[-2], f.shape[-1])
        t = f.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            if t.shape[1] != self.pos_embed.shape[1]:
                raise ValueError(
                    f"input of {x.shape[-2]}x{x.shape[-1]} px gives a {hw[0]}x{hw[1]} grid; the "
                    f"model was built for image_size={self.cfg.image_size} ({self.grid} grid)")
            t = t + self.pos_embed
        return t, hw

    def forward(self, x: torch.Tensor, return_features: bool = False,
                return_attention: bool = False) -> Any:
        t, hw = self.tokens(x)
        a_s, a_c, weights = self.attention(t, hw, need_weights=return_attention)
        if self.fusion is not None:
            fused = self.fusion(a_s, a_c)
        elif a_s is not None or a_c is not None:
            fused = a_s if a_s is not None else a_c
        else:  # attention="none": the trunk's tokens go straight to the head
            fused = t
        features = self.head_norm(fused.mean(dim=1))
        logits = self.head(self.dropout(features))
        if not (return_features or return_attention):
            return logits
        out: dict[str, Any] = {"logits": logits}
        if return_features:
            out["features"] = features
        if return_attention:
            out["attention"] = attention_maps(self, a_s, a_c, fused, hw, weights, logits)
        return out


ATTENTION_DEFINITION = "v2"
"""Which definition made the Fig. 8 maps (chapter 2, "What Fig. 8 shows"); records store it as
``attention_definition``. Records without it hold v1 maps: min-max-scaled token norms."""


def received_attention(weights: torch.Tensor, hw: tuple[int, int], window: int | None,
                       pool: int | None) -> torch.Tensor:
    """Fig. 8, spatial: the attention each grid cell receives, (N, H, W), summing to 1.

    ``weights`` (N, windows, heads, Lq, Lk) are one layer's eq. (1) weights over ``window`` x
    ``window`` query windows of the ``hw`` grid (``None``: one group); with distillation
    (``pool``) the keys are the ``pool`` x ``pool`` max-pooled cells (eq. 4, ceil mode), in
    windows of ``window / pool``. The received attention of a key is its weight averaged over
    heads and over the image's *valid* queries (padded queries are left out; padded keys get
    no weight); a pooled key's share is spread evenly over the grid cells it pools.
    """
    from .attention import windows

    w = weights.detach().float()
    n, g, _, lq, lk = w.shape
    p = hw[0] * hw[1]
    khw = hw if not pool else (-(-hw[0] // pool), -(-hw[1] // pool))
    kcells = khw[0] * khw[1]
    if window is None:
        qvalid = torch.ones(1, lq, dtype=torch.bool, device=w.device)
        key_id = torch.arange(lk, device=w.device)[None]
    else:
        nh, nw = -(-hw[0] // window), -(-hw[1] // window)
        wk = window // pool if pool else window
        _, qvalid = windows(w.new_zeros(1, p, 1), hw, window, nh, nw)
        ids = torch.arange(kcells, device=w.device).view(1, kcells, 1)
        kid, kvalid = windows(ids, khw, wk, nh, nw)
        key_id = torch.where(kvalid, kid[0, ..., 0], kcells)
    if qvalid.shape != (g, lq) or key_id.shape != (g, lk):
        raise ValueError(f"weights of shape {tuple(w.shape)} do not fit a {hw} grid with "
                         f"window={window}, pool={pool}")
    share = (w.mean(2) * qvalid[None, :, :, None]).sum(2) / qvalid.sum()  # (N, windows, Lk)
    mass = w.new_zeros(n, kcells + 1).index_add_(1, key_id.flatten(), share.flatten(1))
    rows, cols = torch.meshgrid(torch.arange(hw[0], device=w.device),
                                torch.arange(hw[1], device=w.device), indexing="ij")
    f = pool or 1
    cell_key = ((rows // f) * khw[1] + cols // f).flatten()
    cells = torch.bincount(cell_key, minlength=kcells).to(w.dtype)
    return (mass[:, cell_key] / cells[cell_key]).reshape(n, *hw)


def class_activation(tokens: torch.Tensor, norm: nn.LayerNorm, head: nn.Linear,
                     cls: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Fig. 8, channel and fused: each position's exact share of class ``cls``'s logit, (N, H, W).

    The head is ``logits = W LN(mean_p a_p) + b``; with the pooled LayerNorm statistics
    (mu, sigma) of ``mean_p a_p``, ``logit_k = sum_p (1/P) W_k (gamma * (a_p - mu) / sigma)
    + W_k beta + b_k``. The map holds the summands, so it sums to the logit minus
    ``W_k beta + b_k`` (:func:`cam_constant`); positive cells speak for the class.
    """
    a = tokens.detach().float()
    pooled = a.mean(dim=1, keepdim=True)
    mu = pooled.mean(-1, keepdim=True)
    sigma = (pooled.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    z = (a - mu) / sigma
    if norm.weight is not None:
        z = z * norm.weight.detach().float()
    w_cls = head.weight.detach().float()[cls]  # (N, C)
    return (z @ w_cls[:, :, None])[..., 0].div(a.shape[1]).reshape(a.shape[0], *hw)


def cam_constant(norm: nn.LayerNorm, head: nn.Linear, cls: torch.Tensor) -> torch.Tensor:
    """The position-free part ``W_k beta + b_k`` of class ``cls``'s logit (N,)."""
    w = head.weight.detach().float()[cls]
    beta = norm.bias.detach().float() if norm.bias is not None else w.new_zeros(w.shape[-1])
    bias = head.bias.detach().float()[cls] if head.bias is not None else 0.0
    return w @ beta + bias


def attention_maps(model: CFDAN, a_s: torch.Tensor | None, a_c: torch.Tensor | None,
                   fused: torch.Tensor, hw: tuple[int, int],
                   weights: dict[str, list[torch.Tensor]], logits: torch.Tensor
                   ) -> dict[str, Any]:
    """Maps for Fig. 8, each (N, H, W) on the token grid (definitions in chapter 2):

    * ``spatial``: attention received per cell in the last spatial layer
      (:func:`received_attention`; sums to 1);
    * ``channel``: class-activation map of the channel branch's output for the predicted
      class (:func:`class_activation`, the head applied to the branch with its own statistics);
    * ``fused``: the same on the ILM output (eq. 16): exact shares of the predicted logit;

    plus ``definition`` (:data:`ATTENTION_DEFINITION`) and the raw weights of every layer
    (``spatial_weights``: (N, windows, heads, Lq, Lk); ``channel_weights``: (N, G, Cw, Cw')).
    """
    cls = logits.detach().argmax(1)
    spatial = None
    if weights["spatial"]:
        blk = model.attention.spatial[-1]
        pool = blk.pool if blk.dist_k is not None else None
        spatial = received_attention(weights["spatial"][-1], hw, blk.window, pool)
    cam = (model.head_norm, model.head, cls, hw)
    return {
        "spatial": spatial,
        "channel": None if a_c is None else class_activation(a_c, *cam),
        "fused": class_activation(fused, *cam),
        "definition": ATTENTION_DEFINITION,
        "spatial_weights": [w.detach() for w in weights["spatial"]],
        "channel_weights": [w.detach() for w in weights["channel"]],
    }
