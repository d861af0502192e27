"""The configuration of a main-job run (``lfeval run``): defaults, TOML loading, validation."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from .errors import InvalidArgument, UnknownName
from .models.pretext import PRETEXTS

FEATURE_EXPLAINERS = ("Saliency", "IntegratedGradients", "GradientShap", "DeepLift", "Random")
EXAMPLE_METHODS = ("cosine", "dknn", "simplex", "tracin", "influence")
METRICS = (
    "RepresentationShift", "SimilarityRate", "PretextCorrelation", "PixelFlipping", "FaithfulnessCorrelation",
    "Sparseness", "Complexity", "MaxSensitivity", "RelativeRepresentationStability",
)


@dataclass
class RunConfig:
    """Settings of ``lfeval run``. Every field can be set in a TOML file or by a flag.

    The defaults are the demo: digits, five pretext encoders, five feature explainers, five
    example methods, the label-free metrics next to the stock ones meaningful without labels,
    and a small meta-evaluation; about 5 minutes on 2 CPU cores.
    """

    name: str = "default"
    out_dir: str = "runs"
    data: str = "digits"
    data_root: str | None = None
    seed: int = 0
    pretexts: list = field(default_factory=lambda: list(PRETEXTS))
    latent_dim: int = 8
    epochs: int = 100
    cache_dir: str = ".lfeval-cache"
    explainers: list = field(default_factory=lambda: list(FEATURE_EXPLAINERS))
    example_methods: list = field(default_factory=lambda: list(EXAMPLE_METHODS))
    metrics: list = field(default_factory=lambda: list(METRICS))
    n_explain: int = 128
    n_train_examples: int = 1000
    mask_fractions: list = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.5, 0.8, 1.0])
    similarity_counts: list = field(default_factory=lambda: [1, 5, 10, 20, 50])
    pretext_seeds: list = field(default_factory=lambda: [0, 1, 2])
    meta_iterations: int = 3
    meta_perturbations: int = 5
    meta_samples: int = 64
    quiet: bool = False

    def __post_init__(self):
        for key in ("latent_dim", "epochs", "n_explain", "n_train_examples", "meta_iterations",
                    "meta_perturbations", "meta_samples"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise InvalidArgument(f"Config `{key}` must be an integer >= 1, got {getattr(self, key)!r}.")
        _check_names("pretexts", self.pretexts, PRETEXTS)
        _check_names("example_methods", self.example_methods, EXAMPLE_METHODS)
        _check_names("metrics", self.metrics, METRICS)
        if not self.pretexts:
            raise InvalidArgument("Config `pretexts` is empty; name at least one pretext task.")

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from a dict, naming the closest valid key for a misspelled one."""
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise UnknownName(f"Unknown config key {key!r}.{hint} Valid keys: {', '.join(valid)}.")
        return cls(**values)

    @classmethod
    def from_toml(cls, path, **overrides) -> "RunConfig":
        """Read a TOML file (top-level keys, or a ``[run]`` table); ``overrides`` win."""
        path = Path(path)
        if not path.exists():
            raise InvalidArgument(f"Config file {str(path)!r} does not exist.")
        with path.open("rb") as fh:
            values = tomllib.load(fh)
        values = values.get("run", values)
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def _check_names(key: str, values, valid) -> None:
    for v in values:
        if v not in valid:
            close = difflib.get_close_matches(str(v), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownName(f"Unknown entry {v!r} in config `{key}`.{hint} Valid: {', '.join(valid)}.")
