"""The convolutional trunk (§3): ResNet-18 up to ``layer4``, output reshaped to P x C tokens.

With the defaults it is torchvision's ResNet-18 exactly (same module names, so a user's
ResNet-18 state dict loads), 512 x 7 x 7 at 224 px. ``trunk_width``, ``trunk_blocks`` and
``trunk_stem`` give the reduced trunks used on 2 CPU cores. Weights are never downloaded:
``load_pretrained`` reads a file the user supplies.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetTrunk(nn.Module):
    """ResNet with BasicBlocks and stage widths (w, 2w, 4w, 8w); returns (N, 8w, H', W')."""

    def __init__(self, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2),
                 stem: str = "imagenet", in_chans: int = 3) -> None:
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            stride = 2 if stem == "half" else 1
            self.conv1 = nn.Conv2d(in_chans, width, 3, stride=stride, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.layer1 = _stage(width, widths[0], blocks[0], 1)
        self.layer2 = _stage(widths[0], widths[1], blocks[1], 2)
        self.layer3 = _stage(widths[1], widths[2], blocks[2], 2)
        self.layer4 = _stage(widths[2], widths[3], blocks[3], 2)
        self.out_channels = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each residual branch
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


IGNORED_PREFIXES = ("fc.",)
"""Keys of a classification checkpoint that the trunk does not use (the ImageNet/MS-Celeb head)."""


def load_pretrained(trunk: ResNetTrunk, path: str | Path) -> None:
    """Load a user's ResNet-18-style checkpoint into ``trunk`` (strict apart from ``fc.*``).

    Accepts a bare state dict or one nested under ``state_dict``/``model``, with optional
    ``module.`` / ``backbone.`` / ``trunk.`` prefixes. Raises ``FileNotFoundError`` or
    ``ValueError`` naming the file and the offending keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained trunk checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    state = {}
    for k, v in obj.items():
        for prefix in ("module.", "backbone.", "trunk."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if not k.startswith(IGNORED_PREFIXES):
            state[k] = v
    own = trunk.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match the trunk; missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise ValueError(
            f"{path}: shape mismatch for {bad[:8]} (e.g. {bad[0]}: checkpoint "
            f"{tuple(state[bad[0]].shape)} vs trunk {tuple(own[bad[0]].shape)})"
        )
    trunk.load_state_dict(state)
