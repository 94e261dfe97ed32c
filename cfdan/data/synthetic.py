"""A synthetic facial-expression set: procedurally drawn faces, generated from a seed.

Nothing is stored on disk. Each class (by default the 8 FER+ classes) has its own mean
*expression* — mouth curvature, openness, width and asymmetry, brow height and tilt, eye
openness, nose wrinkles — and every image draws its expression around that mean (so classes
overlap) plus *nuisance*: pose (rotation, scale, shift), face shape and tone, lighting gradient,
background clutter, occluding patches, blur and pixel noise. A small CNN learns it well above
chance within a minute on a CPU, but not trivially (see ``tests/test_data_synthetic.py``). It
lets the whole pipeline (training, attention maps, ablations) run without any download.

``load(split, seed=0, sizes=(2000, 400, 400), size=48)`` -> :class:`FaceTensors` (grey, C = 1).
"""

from __future__ import annotations

import math

import torch

from cfdan.data.types import SPLITS, FaceTensors, check_split

CLASS_NAMES = [
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
]
DEFAULT_SIZES = {"train": 2000, "val": 400, "test": 400}

# Mean expression of each class. Columns:
#   bend   mouth-corner lift (+ smile, - frown)     open   mouth opening
#   width  mouth half-width                          asym   one-sided lift (contempt)
#   eye    eye openness                              raise  brow lift
#   tilt   inner-brow lift (+ sad/fear, - anger)     nose   nose-wrinkle strength
FEATURES = ("bend", "open", "width", "asym", "eye", "raise", "tilt", "nose")
PROTOTYPES: dict[str, tuple[float, ...]] = {
    #              bend   open  width  asym  eye   raise  tilt   nose
    "neutral":   (0.00, 0.00, 0.30, 0.00, 1.00, 0.00, 0.00, 0.0),
    "happiness": (0.24, 0.08, 0.36, 0.00, 0.70, 0.02, 0.00, 0.0),
    "surprise":  (0.00, 0.34, 0.20, 0.00, 1.50, 0.14, 0.04, 0.0),
    "sadness":   (-0.20, 0.00, 0.28, 0.00, 0.75, 0.00, 0.15, 0.0),
    "anger":     (-0.07, 0.05, 0.30, 0.00, 0.95, -0.08, -0.18, 0.2),
    "disgust":   (-0.12, 0.06, 0.27, 0.05, 0.55, -0.05, -0.06, 1.0),
    "fear":      (-0.04, 0.20, 0.34, 0.00, 1.45, 0.10, 0.15, 0.0),
    "contempt":  (0.02, 0.00, 0.30, 0.24, 0.90, 0.00, 0.00, 0.0),
}
SPREAD = (0.06, 0.045, 0.05, 0.05, 0.20, 0.05, 0.06, 0.35)


def _gen(seed: int, split: str) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * int(seed) + 7919 * SPLITS.index(split) + 17)


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _ink(dist: torch.Tensor, aa: torch.Tensor) -> torch.Tensor:
    """Soft inside-indicator of a shape given a signed distance (negative inside)."""
    return torch.sigmoid(-dist / aa)


def _ellipse(u: torch.Tensor, v: torch.Tensor, a, b) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse with half-axes ``a``, ``b``."""
    k = torch.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = torch.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) / k.clamp(min=1e-6)
    return (k - 1.0) / grad.clamp(min=1e-6)


def render(labels: torch.Tensor, g: torch.Generator, size: int = 48,
           nuisance: float = 1.0) -> torch.Tensor:
    """Draw one face per label; returns uint8 ``(N, 1, size, size)``.

    ``nuisance`` scales pose, lighting, clutter, occlusion, blur and noise (0 = clean faces).
    """
    n = labels.shape[0]
    k = len(CLASS_NAMES)
    proto = torch.tensor([PROTOTYPES[c] for c in CLASS_NAMES], dtype=torch.float32)
    if n and int(labels.max()) >= k:
        raise ValueError(f"labels must be < {k}")
    e = proto[labels] + torch.randn(n, len(FEATURES), generator=g) * torch.tensor(SPREAD)
    bend, open_, width, asym, eye, lift, tilt, nose = e.unbind(1)
    width = width.clamp(0.12, 0.5)
    open_ = open_.clamp(min=0.0)
    eye = eye.clamp(0.25, 1.9)
    nose = nose.clamp(0.0, 1.5)
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)  # contempt's side

    # pose and face shape (nuisance)
    a = nuisance
    rot = torch.deg2rad(_u(g, n, -15, 15) * a)
    scale = 0.8 + 0.08 * _u(g, n, -1, 1) * a
    cx = 0.1 * _u(g, n, -1, 1) * a
    cy = 0.1 * _u(g, n, -1, 1) * a
    face_w = _u(g, n, 0.70, 0.82)
    face_h = _u(g, n, 0.90, 1.02)
    eye_dx = _u(g, n, 0.30, 0.36)

    lin = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    xx = xx[None] - cx[:, None, None]
    yy = yy[None] - cy[:, None, None]
    c, s = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    sc = scale[:, None, None]
    u = (c * xx + s * yy) / sc  # face coordinates: u right, v down, face radius ~ 0.8
    v = (-s * xx + c * yy) / sc
    aa = (1.2 / size) / sc  # about one pixel, for anti-aliasing

    def col(t: torch.Tensor) -> torch.Tensor:
        return t[:, None, None]

    # background: smooth clutter + random shapes
    bg_level = _u(g, n, 0.15, 0.85)
    low = torch.rand(n, 1, 5, 5, generator=g)
    clutter = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic",
                                              align_corners=False)[:, 0]
    img = col(bg_level) + 0.4 * a * (clutter - 0.5)
    for _ in range(2):
        bx, by = _u(g, n, -1, 1), _u(g, n, -1, 1)
        br = _u(g, n, 0.1, 0.4)
        d = torch.sqrt((xx + col(cx) - col(bx)) ** 2 + (yy + col(cy) - col(by)) ** 2) - col(br)
        img = img + a * col(_u(g, n, -0.3, 0.3)) * _ink(d, aa)

    # face
    tone = _u(g, n, 0.45, 0.9)
    face = _ink(_ellipse(u, v, col(face_w), col(face_h)), aa)
    img = img * (1 - face) + col(tone) * face
    dark = col(tone * _u(g, n, 0.15, 0.35))  # ink colour of features

    def paint(img: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        return img * (1 - mask) + colour * mask

    # eyes (ellipses whose height follows the openness) with lighter sclera around the pupil
    eye_y = -0.18
    for sgn in (-1.0, 1.0):
        du = u - sgn * col(eye_dx)
        dv = v - eye_y
        ew, eh = 0.15, 0.095 * col(eye)
        white = _ink(_ellipse(du, dv, ew, eh), aa)
        img = paint(img, white, col(tone * 1.2).clamp(max=1.0))
        pd = torch.sqrt(du**2 + dv**2) - 0.065 * col(eye).clamp(max=1.0)
        img = paint(img, _ink(pd, aa) * white, dark)

    # brows: thick segments; inner ends lifted by tilt, both by raise
    for sgn in (-1.0, 1.0):
        x0, x1 = sgn * (col(eye_dx) - 0.16), sgn * (col(eye_dx) + 0.15)
        y_in = -0.36 - col(lift) - col(tilt)
        y_out = -0.36 - col(lift) + 0.3 * col(tilt)
        du, dv = x1 - x0, y_out - y_in
        t = (((u - x0) * du + (v - y_in) * dv) / (du**2 + dv**2)).clamp(0, 1)
        bd = torch.sqrt((u - x0 - t * du) ** 2 + (v - y_in - t * dv) ** 2) - 0.045
        img = paint(img, _ink(bd, aa), dark)

    # nose wrinkles (disgust)
    for k_ in range(3):
        wy = 0.05 + 0.06 * k_
        wd = _ellipse(u, v - wy, 0.11, 0.015)
        img = paint(img, _ink(wd, aa) * col(nose.clamp(max=1.0)) * 0.8, dark)

    # mouth: centre line v = my - bend * (u/w)^2 (one-sided extra lift for contempt); the
    # opening widens downwards in the middle
    my = 0.45
    q = (u / col(width)).clamp(-1.5, 1.5)
    one_side = torch.relu(q * col(side))
    centre = my - col(bend) * q**2 - col(asym) * one_side**2
    gap = col(open_) * (1 - q**2).clamp(min=0)
    upper = centre - 0.032
    lower = centre + gap + 0.032
    inside_u = torch.abs(u) - col(width)
    md = torch.maximum(torch.maximum(upper - v, v - lower), inside_u)
    img = paint(img, _ink(md, aa), dark)

    # occluding patches (nuisance)
    occ = (torch.rand(n, generator=g) < 0.3 * a).float()
    ox, oy = _u(g, n, -0.7, 0.7), _u(g, n, -0.7, 0.7)
    ow, oh = _u(g, n, 0.12, 0.35), _u(g, n, 0.12, 0.35)
    od = torch.maximum(torch.abs(xx + col(cx) - col(ox)) - col(ow),
                       torch.abs(yy + col(cy) - col(oy)) - col(oh))
    img = paint(img, _ink(od, aa) * col(occ), col(_u(g, n, 0.0, 1.0)))

    # lighting gradient, contrast, blur, noise
    gdir = _u(g, n, 0, 2 * math.pi)
    grad = (torch.cos(gdir)[:, None, None] * xx + torch.sin(gdir)[:, None, None] * yy)
    img = img + a * col(_u(g, n, 0, 0.25)) * grad
    img = 0.5 + (img - 0.5) * col(_u(g, n, 1 - 0.4 * a, 1 + 0.2 * a))
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    blurred = torch.nn.functional.conv2d(img[:, None], kernel.view(1, 1, 1, 5), padding=(0, 2))
    blurred = torch.nn.functional.conv2d(blurred, kernel.view(1, 1, 5, 1), padding=(2, 0))[:, 0]
    mix = col(_u(g, n, 0, 1) * a)
    img = img * (1 - mix) + blurred * mix
    img = img + torch.randn(img.shape, generator=g) * col(_u(g, n, 0.0, 0.05) * a)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)[:, None]


def generate(n: int, seed: int = 0, split: str = "train", size: int = 48,
             num_classes: int = len(CLASS_NAMES), nuisance: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (n,1,size,size), labels int64 (n,))``, balanced classes, from a seed."""
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in 2..{len(CLASS_NAMES)}, got {num_classes}")
    g = _gen(seed, check_split(split))
    labels = torch.randperm(n, generator=g) % num_classes
    images = torch.empty(n, 1, size, size, dtype=torch.uint8)
    for lo in range(0, n, 1024):  # chunks keep the float temporaries small
        hi = min(n, lo + 1024)
        images[lo:hi] = render(labels[lo:hi], g, size=size, nuisance=nuisance)
    return images, labels


def load(split: str, seed: int = 0, sizes: dict[str, int] | tuple[int, int, int] | None = None,
         size: int = 48, num_classes: int = len(CLASS_NAMES), nuisance: float = 1.0,
         **_ignored) -> FaceTensors:
    """One split of the synthetic set (the three splits are independent draws of one seed)."""
    check_split(split)
    if sizes is None:
        sizes = DEFAULT_SIZES
    elif not isinstance(sizes, dict):
        sizes = dict(zip(SPLITS, sizes, strict=True))
    images, labels = generate(int(sizes[split]), seed, split, size, num_classes, nuisance)
    from cfdan.data.cache import content_fingerprint

    fp = content_fingerprint(f"synthetic v1 seed={seed} split={split} n={sizes[split]} "
                             f"size={size} k={num_classes} nuisance={nuisance}")
    return FaceTensors(images=images, labels=labels, soft=None,
                       class_names=CLASS_NAMES[:num_classes], fingerprint=fp,
                       name="synthetic", split=split,
                       info={"seed": seed, "size": size, "nuisance": nuisance})


def probe_accuracy(train: FaceTensors, test: FaceTensors, epochs: int = 8, seed: int = 0,
                   batch_size: int = 64, lr: float = 5e-3) -> list[float]:
    """Test accuracy after each epoch of a tiny CNN (3 conv + BN) trained from scratch.

    A learnability probe of the synthetic set (one-cycle Adam, no augmentation).
    """
    import torch.nn as nn

    torch.manual_seed(seed)
    num_classes = train.num_classes

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]

    c = train.images.shape[1]
    model = nn.Sequential(*block(c, 16), *block(16, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, num_classes))
    x = train.images.float() / 255 - 0.5
    xt = test.images.float() / 255 - 0.5
    steps = epochs * math.ceil(len(train) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    accs = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xt[i:i + 256]).argmax(1) for i in range(0, len(xt), 256)])
        accs.append(float((pred == test.labels).float().mean()))
    return accs
