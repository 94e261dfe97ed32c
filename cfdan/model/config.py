"""`CFDANConfig`: every architectural choice of the model as a plain field, and named presets.

Defaults are the paper's model at 224 x 224 (Table 2 row "Ours"); each field that switches a
mechanism on or off maps to one ablation of §4.4 (Tables 3-5, Fig. 7) or §4.5 (Fig. 10).
The reading of the paper behind every default is documented in ``notebooks/02_architecture``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

ACTIVATIONS = ("pcp", "sigmoid", "relu", "tanh")
ATTENTIONS = ("dual", "spatial", "channel", "none")
FUSIONS = ("ilm", "cam", "sum")
CBMS = ("cam", "identity")
STEMS = ("imagenet", "half", "cifar")
DISTILL_POSITIONS = ("pre", "post")


@dataclass(frozen=True)
class CFDANConfig:
    """Hyper-parameters of :class:`cfdan.model.CFDAN` (paper §3.1-3.4)."""

    # task / input
    num_classes: int = 8
    image_size: int = 224
    in_chans: int = 3
    # trunk (§3: "the network first uses the ResNet model"); defaults = torchvision ResNet-18
    trunk_width: int = 64
    trunk_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    trunk_stem: str = "imagenet"  # imagenet: 7x7/2 + maxpool; half: 3x3/2; cifar: 3x3/1
    pretrained: str | None = None  # path to a user's ResNet-18 checkpoint; never downloaded
    # dual attention (§3.1, eqs. 1-2)
    attention: str = "dual"  # dual (DAM) | spatial (Table 3 baseline) | channel | none (plain CNN)
    num_layers: int = 2  # Fig. 2: two layers of dual attention
    spatial_window: int | None = 4  # grid cells per side of a spatial group; None = one group
    spatial_heads: int = 1
    channel_groups: int = 8  # N_w of eq. (2); 1 = no channel grouping
    pos_embed: bool = True  # §3.1 "adding positional coding"
    norm: bool = True  # pre-LayerNorm on each attention input (not in the paper; see chapter 2)
    closed_loop: bool = True  # §3.3 residual from the undistilled value source
    # cross-fusion (§3.2, eq. 3)
    cross_fusion: bool = True
    # self-attention distillation (§3.3, eqs. 4-5)
    distill: bool = True
    distill_position: str = "pre"  # spatial distillation before (pre) or after (post) K/V projection
    distill_pool: int = 2  # MaxPool kernel = stride over the token grid, ceil mode
    distill_reduction: int = 2  # Conv3- / Conv1 channel reduction factor r
    # interactive learning mechanism (§3.4, eqs. 13-16)
    fusion: str = "ilm"  # ilm (eq. 16) | cam (eq. 14 per branch, summed) | sum
    cbm: str = "cam"  # eq. (15)'s undefined "CBM": read as CAM of eq. (14), or identity
    activation: str = "pcp"
    pcp_x_L: float = 0.19
    pcp_P1: float = -0.24
    pcp_s_L: float = 1.85
    pcp_learnable: bool = False
    # head
    dropout: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "activation": (self.activation, ACTIVATIONS),
            "attention": (self.attention, ATTENTIONS),
            "fusion": (self.fusion, FUSIONS),
            "cbm": (self.cbm, CBMS),
            "trunk_stem": (self.trunk_stem, STEMS),
            "distill_position": (self.distill_position, DISTILL_POSITIONS),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"CFDANConfig.{name}={value!r}; expected one of {allowed}")
        if isinstance(self.trunk_blocks, list):
            object.__setattr__(self, "trunk_blocks", tuple(self.trunk_blocks))
        if len(self.trunk_blocks) != 4 or min(self.trunk_blocks) < 1:
            raise ValueError(f"CFDANConfig.trunk_blocks={self.trunk_blocks}; need 4 counts >= 1")
        for name in ("num_classes", "image_size", "trunk_width", "num_layers", "channel_groups",
                     "spatial_heads", "distill_pool", "distill_reduction", "in_chans"):
            if getattr(self, name) < 1:
                raise ValueError(f"CFDANConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.channel_groups:
            raise ValueError(
                f"CFDANConfig.channel_groups={self.channel_groups} must divide dim={self.dim}")
        if self.dim % self.spatial_heads:
            raise ValueError(
                f"CFDANConfig.spatial_heads={self.spatial_heads} must divide dim={self.dim}")
        if (self.dim // self.channel_groups) % self.distill_reduction:
            raise ValueError("CFDANConfig.distill_reduction must divide dim // channel_groups")
        if self.spatial_window is not None and self.spatial_window % self.distill_pool:
            raise ValueError(
                f"CFDANConfig.spatial_window={self.spatial_window} must be a multiple of "
                f"distill_pool={self.distill_pool}")

    @property
    def dim(self) -> int:
        """Token width C: the trunk's last stage has 8 x trunk_width channels."""
        return 8 * self.trunk_width

    @property
    def grid(self) -> int:
        """Side of the trunk's output grid (7 at 224 px for the ImageNet stem)."""
        size = self.image_size
        size = {"imagenet": -(-size // 4), "half": -(-size // 2), "cifar": size}[self.trunk_stem]
        for _ in range(3):  # layer2-4 stride 2
            size = -(-size // 2)
        return size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trunk_blocks"] = list(self.trunk_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CFDANConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown CFDANConfig field(s) {unknown}; valid: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    # Table 3 rows
    "baseline": dict(attention="spatial", cross_fusion=False, fusion="sum"),
    "dam": dict(cross_fusion=False, fusion="sum"),
    "dam_ilm": dict(cross_fusion=False),
    "full": {},
    # Table 4 rows: activation x ILM (without ILM each branch is gated by its own CA, eq. 14)
    **{f"act_{a}": dict(activation=a) for a in ACTIVATIONS},
    **{f"act_{a}_no_ilm": dict(activation=a, fusion="cam") for a in ACTIVATIONS},
    # Table 5 rows
    "no_distill": dict(distill=False),
    "distill": {},
    # Fig. 7 panels: grouping on/off
    "no_grouping": dict(spatial_window=None, channel_groups=1),
    "spatial_only_no_grouping": dict(attention="spatial", cross_fusion=False, fusion="sum",
                                     spatial_window=None),
    # Fig. 10 / §5: learnable PCP
    "learnable_pcp": dict(pcp_learnable=True),
    # eq. (15) alternative reading of CBM
    "cbm_identity": dict(cbm="identity"),
    # not in the paper: the trunk alone (global average pool, LayerNorm, linear head), the
    # yardstick of the cpu-profile search (what the attention adds or costs at that scale)
    "plain_cnn": dict(attention="none", cross_fusion=False, fusion="sum", distill=False,
                      pos_embed=False),
}
"""Named presets, each a set of field overrides on the defaults (one per ablation row)."""


def preset(name: str, **overrides: Any) -> CFDANConfig:
    """The config of preset ``name`` with extra field ``overrides`` (e.g. ``image_size=64``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    base = CFDANConfig()
    merged = {**PRESETS[name], **overrides}
    known = {f.name for f in fields(CFDANConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown CFDANConfig field(s) {unknown}; valid: {sorted(known)}")
    return replace(base, **merged)
