"""Input pipeline (§4.2): resize to the model's input size, augment, normalise.

:class:`Augment` works on a whole uint8 batch ``(N, C, H, W)`` (C = 1 or 3) on whatever
device it lives on. In training mode one batched ``affine_grid``/``grid_sample`` does the
random resized crop, horizontal flip and small rotation together; random erasing is a batched
mask. All random parameters are drawn from a CPU :class:`torch.Generator` (seeded), so a seed
gives the same augmentation on CPU and CUDA. Evaluation mode is resize + normalise only.
The paper gives only the input size (224x224); the augmentation recipe is ours.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Augment:
    """Callable ``uint8 (N, C, H, W) -> float32 (N, 3, S, S)``, normalised.

    Parameters: ``image_size`` S; ``train`` (random crop/flip/rotation/erasing) or eval
    (resize only); ``seed`` for the parameter generator (``None``: drawn from torch's global
    generator); ``mean``/``std`` per RGB channel; ``scale`` (area fraction) and ``ratio``
    (aspect) of the random crop; ``flip`` probability; ``degrees`` of rotation (uniform in
    ±degrees); ``erase_p``, ``erase_scale``, ``erase_ratio`` of random erasing (the erased box is
    set to 0 after normalisation, i.e. to the mean colour).
    """

    def __init__(
        self,
        image_size: int,
        train: bool = True,
        seed: int | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        scale: tuple[float, float] = (0.8, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        degrees: float = 10.0,
        erase_p: float = 0.25,
        erase_scale: tuple[float, float] = (0.02, 0.2),
        erase_ratio: tuple[float, float] = (0.3, 3.3),
        padding_mode: str = "zeros",
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)
        self.train = bool(train)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.scale = scale
        self.ratio = ratio
        self.flip = flip
        self.degrees = degrees
        self.erase_p = erase_p
        self.erase_scale = erase_scale
        self.erase_ratio = erase_ratio
        self.padding_mode = padding_mode
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return f"Augment({self.image_size}, {mode}, seed={self.seed})"

    # ------------------------------------------------------------------ helpers
    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.generator)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std as one fused multiply-add; a grey channel is broadcast to RGB."""
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return torch.addcmul(-mean / std, x, 1.0 / std)

    @staticmethod
    def _grid(theta: torch.Tensor, s: int) -> torch.Tensor:
        """``F.affine_grid(theta, (N, C, s, s), align_corners=False)``, by broadcasting (faster)."""
        n = theta.shape[0]
        lin = (torch.arange(s, device=theta.device, dtype=theta.dtype) * 2 + 1) / s - 1
        out = torch.empty(n, s, s, 2, device=theta.device, dtype=theta.dtype)
        for k in range(2):
            along_x = theta[:, k, 0, None] * lin + theta[:, k, 2, None]
            along_y = theta[:, k, 1, None] * lin
            torch.add(along_x[:, None, :], along_y[:, :, None], out=out[..., k])
        return out

    def _theta(self, n: int) -> torch.Tensor:
        """Per-sample affine (N, 2, 3) mapping output to input coordinates in [-1, 1]."""
        area = self._uniform(n, *self.scale)
        log_r = self._uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (1 - w) * (2 * torch.rand(n, generator=self.generator) - 1)
        cy = (1 - h) * (2 * torch.rand(n, generator=self.generator) - 1)
        sign = torch.where(torch.rand(n, generator=self.generator) < self.flip, -1.0, 1.0)
        ang = torch.deg2rad(self._uniform(n, -self.degrees, self.degrees))
        cos, sin = torch.cos(ang), torch.sin(ang)
        # input = c + diag(w, h) @ R(ang) @ diag(sign, 1) @ output
        theta = torch.empty(n, 2, 3)
        theta[:, 0, 0] = w * cos * sign
        theta[:, 0, 1] = -w * sin
        theta[:, 1, 0] = h * sin * sign
        theta[:, 1, 1] = h * cos
        theta[:, 0, 2] = cx
        theta[:, 1, 2] = cy
        return theta

    def _erase_mask(self, n: int, s: int, device: torch.device) -> torch.Tensor:
        """(N, 1, S, S) bool mask of the erased boxes (empty for samples not erased)."""
        area = self._uniform(n, *self.erase_scale) * s * s
        log_r = self._uniform(n, math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1]))
        r = torch.exp(log_r)
        eh = torch.sqrt(area * r).round().clamp(1, s)
        ew = torch.sqrt(area / r).round().clamp(1, s)
        y0 = torch.floor(torch.rand(n, generator=self.generator) * (s - eh + 1))
        x0 = torch.floor(torch.rand(n, generator=self.generator) * (s - ew + 1))
        on = torch.rand(n, generator=self.generator) < self.erase_p
        eh = torch.where(on, eh, torch.zeros_like(eh))
        params = torch.stack([y0, y0 + eh, x0, x0 + ew], 1).to(device)
        ar = torch.arange(s, device=device, dtype=params.dtype)
        rows = (ar[None] >= params[:, 0:1]) & (ar[None] < params[:, 1:2])
        cols = (ar[None] >= params[:, 2:3]) & (ar[None] < params[:, 3:4])
        return (rows[:, :, None] & cols[:, None, :])[:, None]

    # ------------------------------------------------------------------ call
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images[:, None]
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected a (N, C, H, W) batch with C in (1, 3), got "
                             f"{tuple(images.shape)}")
        n, _, h, w = images.shape
        s = self.image_size
        x = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.train and n > 0:
            if min(h, w) > 2 * s:  # anti-alias large sources before sampling
                x = F.interpolate(x, size=(2 * s, 2 * s), mode="bilinear", antialias=True,
                                  align_corners=False)
            theta = self._theta(n).to(device=x.device)
            grid = self._grid(theta, s)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode,
                              align_corners=False)
        elif (h, w) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True,
                              align_corners=False)
        x = self._normalise(x)  # (N, 3, S, S), a new tensor
        if self.train and n > 0 and self.erase_p > 0:
            x.masked_fill_(self._erase_mask(n, s, x.device), 0.0)
        return x


def throughput(image_size: int, batch: int = 64, src_size: int = 48, channels: int = 1,
               train: bool = True, repeats: int = 20, device: str = "cpu") -> float:
    """Images per second of :class:`Augment` on random uint8 batches (a benchmark helper)."""
    import time

    aug = Augment(image_size, train=train, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, channels, src_size, src_size), dtype=torch.uint8,
                      generator=g).to(device)
    aug(x)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        aug(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def share_of_step(model: torch.nn.Module, image_size: int, batch_size: int = 32,
                  src_size: int = 48, channels: int = 1, repeats: int = 5,
                  num_classes: int = 8, augment: Augment | None = None) -> dict[str, float]:
    """Time :class:`Augment` (train mode; ``augment``, default its defaults) against one
    training step of ``model`` on CPU.

    A step is forward + cross-entropy + backward + an AdamW update on one augmented batch.
    Returns milliseconds per batch for both and the pipeline's share of the sum.
    """
    import time

    aug = augment if augment is not None else Augment(image_size, train=True, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch_size, channels, src_size, src_size), dtype=torch.uint8,
                      generator=g)
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch), y)
        loss.backward()
        opt.step()

    batch = aug(x)
    step()  # warm-up
    t_augs, t_steps = [], []
    for _ in range(repeats):  # interleaved, as in training; medians resist other load
        t0 = time.perf_counter()
        batch = aug(x)
        t1 = time.perf_counter()
        step()
        t_augs.append(t1 - t0)
        t_steps.append(time.perf_counter() - t1)
    t_aug = sorted(t_augs)[len(t_augs) // 2]
    t_step = sorted(t_steps)[len(t_steps) // 2]
    return {"augment_ms": 1e3 * t_aug, "step_ms": 1e3 * t_step,
            "augment_share": t_aug / (t_aug + t_step),
            "augment_img_per_s": batch_size / t_aug}
