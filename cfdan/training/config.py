"""Run configuration: TOML profiles in ``configs/`` plus ``--set section.field=value`` overrides.

A profile has four sections (``[model]``, ``[data]``, ``[train]``, ``[eval]``) and an optional
top-level ``experiment`` name. ``[model]`` holds ``preset`` (a name from
:data:`cfdan.model.PRESETS`) and any :class:`cfdan.model.CFDANConfig` field; ``image_size`` and
``num_classes`` are taken from the data. The recipe of §4.2 (AdamW, betas (0.9, 0.999), weight
decay 1e-4, cross-entropy, batch 32, 224 px) is the default of :class:`TrainConfig`; what the
paper leaves out (learning rate, schedule, epochs, augmentation) is chosen here and recorded.

Sweeps (``configs/experiments/*.toml``) list variants x seeds on a base profile, see
:func:`load_experiment`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfdan import paths

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

CONFIGS_DIR: Path = paths.REPO_ROOT / "configs"
EXPERIMENTS_DIR: Path = CONFIGS_DIR / "experiments"
KNOWN_DATASETS = ("ferplus", "rafdb", "affectnet", "synthetic")


class ConfigError(ValueError):
    """A profile, experiment file or override is invalid."""


@dataclass
class DataConfig:
    """What to train on (§4.1)."""

    dataset: str = "ferplus"
    root: str = ""
    """Dataset folder or packed file; "" means :func:`cfdan.paths.ferplus_root` for FERPlus."""
    label_mode: str = "majority"
    image_size: int = 224
    cache_dir: str = ""
    """Decoded-tensor cache; "" means :func:`cfdan.paths.cache_dir`."""
    max_train: int = 0
    """Use a seeded random subset of at most this many training images (0 = all)."""
    max_eval: int = 0
    """Likewise for val and test (0 = all; keep 0 for reported numbers)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword options for the dataset loader (e.g. ``sizes`` of the synthetic set)."""


@dataclass
class TrainConfig:
    """Optimisation (§4.2); fields the paper does not give are marked "ours" in the docs."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_epochs: float = 2.0
    """Linear warm-up length, then cosine decay to ``min_lr_ratio * lr`` (per step)."""
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0
    targets: str = "hard"
    """"hard" (majority label, plain cross-entropy as in §4.2) or "soft" (vote distribution)."""
    augment: bool = True
    aug_crop_scale: float = 0.8
    """Smallest area fraction of the random resized crop (the largest is 1); ours."""
    aug_degrees: float = 10.0
    """Random rotation, uniform in +-degrees; ours."""
    aug_erase_p: float = 0.25
    """Probability of random erasing per image; ours."""
    amp: bool | str = True
    """bf16 autocast: true (CUDA: where supported; CPU: always), false, or "auto" (only where
    the device computes bf16 natively: CUDA with bf16, a CPU with avx512_bf16 or amx_bf16).
    "auto" is resolved to true or false when the config is loaded, so the numerics a run used
    are part of its resolved config and its run id."""
    paired_init: bool = False
    """Seed each model component's initial weights from ``(seed, component)``, so that the
    variants of an ablation start from the same weights wherever they share a component."""
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = ""
    """torch.compile mode when ``compile`` ("" = default, "reduce-overhead" = CUDA graphs)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm at this value (0 = no clipping; the norm is logged anyway)."""
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    """torch intra-op threads on CPU (0 = leave torch's default)."""
    time_budget_s: float = 0.0
    """Stop after the epoch at which the next one would not fit in this wall time (0 = none)."""
    fit_to_budget: bool = False
    """With ``time_budget_s``: after epoch ``fit_after_epoch``, shorten the planned epochs (and
    so the cosine schedule) to what fits in the budget, instead of cutting a longer schedule
    short."""
    fit_after_epoch: int = 1
    """The epoch (1-based) whose cost plans the fitted schedule: 2 with ``compile``, whose first
    epoch also pays for the compilation (the cosine part starts after the warm-up either way)."""
    eval_batch_size: int = 256
    progress: bool = True
    progress_interval_s: float = 2.0
    keep_checkpoints: bool = True
    """Keep ``best.pt`` (and ``last.pt``) after the run; false deletes them once recorded."""


@dataclass
class EvalConfig:
    """Honest evaluation (§4.3-4.4): selection on val, test once at the end."""

    tta_flip: bool = False
    """Average the logits of the image and its mirror, at validation (selection) and test."""
    feature_snapshots: int = 0
    """Store pooled test features of a fixed subsample at this many evenly spaced points of
    training (4: at 25, 50, 75 and 100 % of the epochs), float16, for the t-SNE of Fig. 7."""
    snapshot_samples: int = 1000
    """Test images in each feature snapshot (a fixed, seeded subsample)."""
    train_subset: int = 5000
    """Accuracy on a fixed subset of this many train images, without augmentation, at the end
    of the run (0 = skip): tells underfitting from overfitting, which the running train
    accuracy on augmented batches cannot."""
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    tsne_samples: int = 2000
    attention_images: int = 8
    attention_seed: int = 0


SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
TOP_LEVEL = ("experiment", "profile", "variant", "description", "model", "data", "train", "eval")

# Fields that do not change what a run computes; left out of the run_id hash.
NON_IDENTITY = {
    "data.root",
    "data.cache_dir",
    "train.device",
    "train.threads",
    "train.progress",
    "train.progress_interval_s",
    "train.keep_checkpoints",
    "train.time_budget_s",  # a run it cuts short says so in its record (cut_short)
}

# Fields added after records were stored: at these defaults they are left out of the run_id
# hash, so that the runs stored before they existed keep their ids (they computed the same).
ADDED_LATER: dict[str, Any] = {
    "train.aug_crop_scale": 0.8,
    "train.aug_degrees": 10.0,
    "train.aug_erase_p": 0.25,
    "eval.train_subset": 5000,
    "train.paired_init": False,
    "eval.feature_snapshots": 0,
    "eval.snapshot_samples": 1000,
    "train.fit_after_epoch": 1,
}


@dataclass
class Config:
    """A resolved run configuration."""

    experiment: str = "default"
    profile: str = ""
    variant: str = ""
    description: str = ""
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "full"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the sections (``model``, ``data``, ``train``, ``eval``)."""
        return {
            "model": dict(self.model),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }

    def identity(self) -> dict[str, Any]:
        """The fields that determine a run's outcome (everything but :data:`NON_IDENTITY`)."""
        d = self.to_dict()
        for dotted in NON_IDENTITY:
            sec, name = dotted.split(".")
            d[sec].pop(name, None)
        for dotted, default in ADDED_LATER.items():
            sec, name = dotted.split(".")
            if d[sec].get(name, default) == default:
                d[sec].pop(name, None)
        return d

    @property
    def run_id(self) -> str:
        """Short hash of :meth:`identity` (the seed is ``train.seed``, so it is included)."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def seed(self) -> int:
        return self.train.seed


# --------------------------------------------------------------------------- model fields
def model_fields() -> list[str] | None:
    """Valid ``[model]`` keys: ``preset`` + CFDANConfig fields, or None if the model is absent."""
    try:
        from cfdan.model import CFDANConfig
    except ImportError:
        return None
    if not dataclasses.is_dataclass(CFDANConfig):
        return None
    derived = ("image_size", "num_classes")  # taken from the data
    return ["preset", *(f.name for f in dataclasses.fields(CFDANConfig) if f.name not in derived)]


def model_presets() -> list[str] | None:
    try:
        from cfdan.model import PRESETS
    except ImportError:
        return None
    return sorted(PRESETS)


# --------------------------------------------------------------------------- parsing
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if getattr(typ, "__origin__", None) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _set_field(cfg: Config, dotted: str, value: Any, source: str) -> None:
    if "." not in dotted:
        if dotted in ("experiment", "profile", "variant", "description"):
            setattr(cfg, dotted, _coerce(value, str, f"{source}: {dotted}"))
            return
        raise ConfigError(
            f"{source}: {dotted!r} is not a field; use section.field with section in "
            f"{['model', *SECTIONS]} or one of experiment/variant/description"
        )
    sec, name = dotted.split(".", 1)
    if sec == "model":
        if name in ("image_size", "num_classes"):
            raise ConfigError(
                f"{source}: model.{name} is taken from the data; set data.image_size or "
                f"data.dataset instead"
            )
        valid = model_fields()
        if valid is not None and name not in valid:
            raise ConfigError(
                f"{source}: unknown field 'model.{name}'; valid model fields: {', '.join(valid)}"
            )
        if name == "preset":
            presets = model_presets()
            if presets is not None and value not in presets:
                raise ConfigError(
                    f"{source}: unknown model.preset {value!r}; presets: {', '.join(presets)}"
                )
        cfg.model[name] = value
        return
    if sec not in SECTIONS:
        raise ConfigError(
            f"{source}: unknown section {sec!r} in {dotted!r}; sections: model, {', '.join(SECTIONS)}"
        )
    types = _field_types(SECTIONS[sec])
    if sec == "data" and name.startswith("options."):  # --set data.options.sizes=[...]
        cfg.data.options[name.split(".", 1)[1]] = value
        return
    if name not in types:
        raise ConfigError(
            f"{source}: unknown field '{sec}.{name}'; valid {sec} fields: {', '.join(types)}"
        )
    setattr(getattr(cfg, sec), name, _coerce(value, types[name], f"{source}: {sec}.{name}"))


def _apply_mapping(cfg: Config, data: dict[str, Any], source: str) -> None:
    for key, value in data.items():
        if key in ("model", *SECTIONS):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table")
            for name, v in value.items():
                _set_field(cfg, f"{key}.{name}", v, source)
        elif key in ("experiment", "profile", "variant", "description"):
            _set_field(cfg, key, value, source)
        else:
            raise ConfigError(
                f"{source}: unknown top-level key {key!r}; valid: {', '.join(TOP_LEVEL)}"
            )


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML literal (``5``, ``1e-3``, ``true``, ``"x"``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``section.field=value`` into the dotted name and the parsed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.field=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty field name")
    return key, parse_value(text.strip())


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.toml"))


def profile_path(profile: str | Path) -> Path:
    """Resolve a profile name (``smoke``) or a path to a TOML file."""
    p = Path(profile)
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"profile file {p} does not exist")
        return p
    cand = CONFIGS_DIR / f"{profile}.toml"
    if not cand.is_file():
        raise ConfigError(
            f"unknown profile {str(profile)!r}; available: {', '.join(available_profiles())} "
            f"(or a path to a .toml file)"
        )
    return cand


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def validate(cfg: Config) -> Config:
    """Check values that types alone do not catch; raises :class:`ConfigError`."""
    if cfg.data.dataset not in KNOWN_DATASETS:
        raise ConfigError(
            f"unknown dataset {cfg.data.dataset!r}; known: {', '.join(KNOWN_DATASETS)}"
        )
    if cfg.data.image_size < 8:
        raise ConfigError(f"data.image_size must be >= 8, got {cfg.data.image_size}")
    t = cfg.train
    if t.epochs < 1 or t.batch_size < 1 or t.eval_batch_size < 1:
        raise ConfigError("train.epochs, train.batch_size and train.eval_batch_size must be >= 1")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if not 0 < t.aug_crop_scale <= 1:
        raise ConfigError(f"train.aug_crop_scale must be in (0, 1], got {t.aug_crop_scale}")
    if not 0 <= t.aug_erase_p <= 1:
        raise ConfigError(f"train.aug_erase_p must be in [0, 1], got {t.aug_erase_p}")
    t.amp = resolve_amp(t.amp, t.device)
    if t.targets not in ("hard", "soft"):
        raise ConfigError(f"train.targets must be 'hard' or 'soft', got {t.targets!r}")
    if t.device != "auto" and not t.device.startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"train.device must be auto, cpu, cuda[:N] or mps, got {t.device!r}")
    if "preset" not in cfg.model:
        raise ConfigError("[model] needs a preset (e.g. preset = \"full\")")
    for key in ("image_size", "num_classes"):
        if key in cfg.model:
            raise ConfigError(
                f"model.{key} is taken from the data; set data.image_size / the dataset instead"
            )
    return cfg


def resolve_amp(amp: bool | str, device: str) -> bool:
    """``train.amp`` as a bool; "auto" asks :func:`cfdan.training.provenance.native_bf16` of the device
    that ``train.device`` names (``auto``: CUDA when available, else the CPU)."""
    if isinstance(amp, bool):
        return amp
    text = str(amp).strip().lower()
    if text in ("true", "1", "yes", "false", "0", "no"):
        return text in ("true", "1", "yes")
    if text != "auto":
        raise ConfigError(f"train.amp must be true, false or \"auto\", got {amp!r}")
    import torch

    from cfdan.training.provenance import native_bf16

    name = device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return False
    return native_bf16(torch.device(name.split(":")[0]))


def load_config(
    profile: str | Path = "smoke",
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Load a profile (name in ``configs/`` or TOML path) and apply overrides.

    ``overrides`` is a list of ``"section.field=value"`` strings or a dict ``{dotted: value}``.
    Unknown sections/fields raise :class:`ConfigError` listing the valid ones.
    """
    path = profile_path(profile)
    cfg = Config(profile=path.stem, experiment=path.stem)
    _apply_mapping(cfg, read_toml(path), str(path))
    apply_overrides(cfg, overrides)
    return validate(cfg)


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any] | None) -> Config:
    """Apply ``--set`` style overrides in place (and return ``cfg``)."""
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        _set_field(cfg, key, value, "--set")
    return cfg


def from_dict(d: dict[str, Any], **meta: str) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. a stored record)."""
    cfg = Config(model={})
    _apply_mapping(cfg, {k: v for k, v in d.items() if k in ("model", *SECTIONS)}, "record")
    for k, v in meta.items():
        setattr(cfg, k, v)
    return validate(cfg)


# --------------------------------------------------------------------------- experiments
@dataclass
class Experiment:
    """A sweep: ``variants`` (name -> overrides) x ``seeds`` on a base profile."""

    name: str
    profile: str
    seeds: list[int]
    overrides: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    description: str = ""
    pairs_with: list[str] = field(default_factory=list)
    """Experiments whose runs this one is paired with (the full model it is compared to): they
    must be on the same kind of hardware (:func:`cfdan.training.sweep.hardware`)."""

    variant_seeds: dict[str, list[int]] = field(default_factory=dict)
    """Variants planned on fewer seeds than :attr:`seeds` (a variant table's ``seeds`` key)."""

    def seeds_of(self, variant: str) -> list[int]:
        """The seeds ``variant`` is planned on: its own ``seeds`` key, else :attr:`seeds`."""
        return self.variant_seeds.get(variant, self.seeds)

    def configs(self, extra: list[str] | dict[str, Any] | None = None) -> list[Config]:
        """One resolved :class:`Config` per (variant, seed), seed-major: every variant of the
        first seed, in file order, then the next seed (the queue's priority: a queue cut short
        leaves complete paired seeds)."""
        out = []
        for seed in self.seeds:
            for vname, vset in self.variants.items():
                if seed not in self.seeds_of(vname):
                    continue
                ov = {**self.overrides, **vset, "train.seed": seed}
                cfg = load_config(self.profile, ov)
                apply_overrides(cfg, extra)
                cfg.experiment, cfg.variant = self.name, vname
                out.append(validate(cfg))
        return out


def available_experiments(fixtures: bool = False) -> list[str]:
    """The experiment files' names; those marked ``fixture = true`` (the tests' own) only
    with ``fixtures``."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml")
                  if fixtures or not read_toml(p).get("fixture", False))


def load_experiment(name: str | Path) -> Experiment:
    """Read ``configs/experiments/<name>.toml`` (or a path).

    Format::

        profile = "cpu"
        seeds = [0, 1, 2]
        [overrides]                 # applied to every run
        "train.epochs" = 30
        pairs_with = ["cpu_v2"]     # optional: paired with that one's runs, same hardware
        [variants]                  # name -> overrides
        baseline = { "model.preset" = "baseline" }
        full = { "model.preset" = "full", seeds = [0, 1] }   # optional: a subset of seeds
    """
    p = Path(name)
    if not (p.suffix == ".toml" and p.is_file()):
        p = EXPERIMENTS_DIR / f"{name}.toml"
        if not p.is_file():
            raise ConfigError(
                f"unknown experiment {str(name)!r}; available: "
                f"{', '.join(available_experiments(fixtures=True)) or '(none)'}"
            )
    d = read_toml(p)
    allowed = {"profile", "seeds", "overrides", "variants", "description", "name", "pairs_with",
               "fixture"}
    bad = set(d) - allowed
    if bad:
        raise ConfigError(f"{p}: unknown keys {sorted(bad)}; valid: {sorted(allowed)}")
    if "profile" not in d:
        raise ConfigError(f"{p}: missing 'profile'")
    seeds = d.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
        raise ConfigError(f"{p}: 'seeds' must be a non-empty list of integers")
    variants = d.get("variants") or {"default": {}}
    if not all(isinstance(v, dict) for v in variants.values()):
        raise ConfigError(f"{p}: every variant must be a table of overrides")
    variants = {k: dict(v) for k, v in variants.items()}
    variant_seeds = {k: v.pop("seeds") for k, v in variants.items() if "seeds" in v}
    for k, vs in variant_seeds.items():
        if (not isinstance(vs, list) or not vs or not all(isinstance(s, int) for s in vs)
                or not set(vs) <= set(seeds)):
            raise ConfigError(f"{p}: variant {k!r}: 'seeds' must be a non-empty list of "
                              f"integers from the experiment's seeds {seeds}")
    exp = Experiment(
        name=d.get("name", p.stem),
        profile=d["profile"],
        seeds=seeds,
        overrides=dict(d.get("overrides", {})),
        variants=variants,
        description=d.get("description", ""),
        pairs_with=list(d.get("pairs_with", [])),
        variant_seeds=variant_seeds,
    )
    # Validate every run's config now, so a typo fails before hours of training.
    try:
        exp.configs()
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return exp


def planned(name: str) -> tuple[tuple[int, ...], frozenset[str]] | None:
    """``(seeds, run ids)`` that ``configs/experiments/<name>.toml`` plans today; None when
    ``name`` has no experiment file (a profile run such as ``paper``: every run of it is its own).

    A record *is planned* when this is None or its ``run_id`` is among the ids (:func:`is_planned`):
    a record of an older profile or schedule has another run id. The queue
    (:func:`cfdan.training.sweep.current_records`) and the run table
    (:func:`cfdan.analysis.runs.frame`) both decide so."""
    try:
        exp = load_experiment(name)
    except ConfigError:
        return None
    return tuple(exp.seeds), frozenset(c.run_id for c in exp.configs())


def is_planned(run_id: str | None,
               plan: tuple[tuple[int, ...], frozenset[str]] | None) -> bool:
    """Whether a record's ``run_id`` is one of its experiment's runs today (``plan`` from
    :func:`planned`; every run is when the experiment has no file)."""
    return plan is None or run_id in plan[1]
