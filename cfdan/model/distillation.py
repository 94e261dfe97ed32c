"""Self-attention distillation (§3.3, eqs. 4-5): shrink keys and values before attention.

* spatial (eq. 4): ``MaxPool(Conv3+(Conv3-(.)))`` on the token grid; Conv3- maps C -> C/r,
  Conv3+ maps C/r -> C (grouped, ``C/r`` groups, so each unit adds only ~18 C parameters),
  max pooling (kernel = stride = ``pool``, ceil mode) cuts the number of patches;
* channel (eq. 5): ``Conv3(Conv1(.))`` with no pooling: Conv1 reduces the channels of each
  channel group from C_w to C_w / r (a grouped 1x1 convolution), Conv3 is a kernel-3
  convolution along the channel axis that links neighbouring channels. Fewer key/value
  channels means fewer "tokens" for channel attention, as pooling does for spatial attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tokens_to_grid(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, P, C) -> (N, C, H, W)."""
    n, p, c = x.shape
    return x.transpose(1, 2).reshape(n, c, hw[0], hw[1])


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, P, C)."""
    return x.flatten(2).transpose(1, 2)


class SpatialDistill(nn.Module):
    """Eq. (4): Dist_s(X) = MaxPool(Conv3+(Conv3-(X))); (N, P, C) -> (N, P', C)."""

    def __init__(self, dim: int, reduction: int = 2, pool: int = 2) -> None:
        super().__init__()
        low = dim // reduction
        self.conv_down = nn.Conv2d(dim, low, 3, padding=1, groups=low)  # Conv3-
        self.conv_up = nn.Conv2d(low, dim, 3, padding=1, groups=low)  # Conv3+
        self.pool = nn.MaxPool2d(pool, stride=pool, ceil_mode=True)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        g = self.pool(self.conv_up(self.conv_down(tokens_to_grid(x, hw))))
        return grid_to_tokens(g), (g.shape[-2], g.shape[-1])


class ChannelDistill(nn.Module):
    """Eq. (5): Dist_c(X) = Conv3(Conv1(X)) per channel group; (N, P, C) -> (N, P, C / r)."""

    def __init__(self, dim: int, groups: int, reduction: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.conv1 = nn.Conv1d(dim, dim // reduction, 1, groups=groups)  # Conv1, per group
        self.conv3 = nn.Conv1d(1, 1, 3, padding=1, bias=False)  # Conv3 along channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p, _ = x.shape
        y = self.conv1(x.transpose(1, 2)).transpose(1, 2)  # (N, P, C/r)
        c_low = y.shape[-1]
        z = y.reshape(n, p, self.groups, c_low // self.groups)
        return channel_conv3(z, self.conv3.weight).reshape(n, p, c_low)


def channel_conv3(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Conv1d(1, 1, 3, padding=1, bias=False)`` along the last axis of ``z``, as three taps.

    Equal to running ``conv3`` over ``z.reshape(-1, 1, C_w)`` up to float rounding, without a
    convolution over N x P x G one-channel rows of length C_w (its backward dominated the
    distillation's cost on the CPU: 18,432 rows of 8 at batch 64).
    """
    w = weight.reshape(3).to(z.dtype)
    zp = F.pad(z, (1, 1))
    return zp[..., :-2] * w[0] + zp[..., 1:-1] * w[1] + zp[..., 2:] * w[2]
