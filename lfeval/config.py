"""The configuration of a main-job run (``lfeval run``): defaults, TOML loading, validation."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import tomllib

from .data import available as available_data
from .data import canonical_name, declared_modality
from .errors import InvalidArgument, NotApplicable, UnknownName
from .execution import BACKENDS, check_backend
from .explain.base import explainer_names, get_explainer
from .explain.examples import EXAMPLE_METHODS
from .metrics.catalogue import CATALOGUE, FEATURES, get_entry
from .models.pretext import PRETEXTS
from .models.user_encoders import check_spec
from .models.vae import VAE_PRETEXTS
from .precision import PRECISIONS
from .threads import check_threads
from .validation import check_device

FEATURE_EXPLAINERS = ("Saliency", "IntegratedGradients", "GradientShap", "DeepLift", "Random")
#: the default metrics: lfeval's label-free ones, two adapted stock faithfulness metrics, and the stock
#: metrics that are meaningful without labels (any name of lfeval.metrics.CATALOGUE works)
METRICS = (
    "RepresentationShift", "PretextCorrelation", "SimilarityRate", "SimilarityContrast", "PixelFlipping",
    "FaithfulnessCorrelation", "Sparseness", "Complexity", "MaxSensitivity", "RelativeRepresentationStability",
)
#: keyword arguments of lfeval.explain that every method takes
_EXPLAIN_KEYS = ("baseline", "batch_size", "seed", "abs", "reduce_axes")
META_METRICS = ("RepresentationShift", "PixelFlipping", "FaithfulnessCorrelation")


@dataclass
class RunConfig:
    """Settings of ``lfeval run``. Every field can be set in a TOML file or by a flag.

    The defaults are the demo: digits, five pretext encoders, five feature explainers, five
    example methods, the label-free metrics next to the stock ones meaningful without labels,
    and a small meta-evaluation; about 3 minutes on 2 CPU cores. ``backend = "ray"`` runs the
    per-encoder and per-metric stages as Ray tasks (on a local Ray, or the cluster at ``address``).

    ``threads``: torch's intra-op threads for every stage, ``"auto"`` (:func:`lfeval.threads.choose`:
    from the work's size, the process's cores and, after training, the load; ``LFEVAL_THREADS``
    overrides it) or an integer. It does not change stored results (training aside, see
    :mod:`lfeval.threads`), so a rerun may use another value.

    ``device``: where every stage computes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), checked and
    normalised here once. ``precision``: the arithmetic on a GPU (:mod:`lfeval.precision`: ``"highest"``, the
    default, equals the CPU within 1e-4 relative; ``"tf32"`` and ``"bf16"`` are faster and less exact; on the CPU
    ``"tf32"`` computes as ``"highest"`` and ``"bf16"`` autocasts, slowly). A changed ``precision`` is a changed
    setting (a rerun refuses it without ``--fresh``); a changed ``device`` is not: each stored stage records the
    device and precision it was computed with, a resume on another device keeps them and says so, and refuses
    when ``precision`` is not ``"highest"`` (see :class:`lfeval.pipeline.StageStore`). The weight cache is shared
    by devices: an encoder trained on one device is reused on another.
    """

    name: str = "default"
    out_dir: str = "runs"
    data: str = "digits"
    data_root: str | None = None
    data_options: dict = field(default_factory=dict)
    seed: int = 0
    pretexts: list = field(default_factory=lambda: list(PRETEXTS))
    latent_dim: int = 8
    epochs: int = 100
    checkpoints: int = 3
    cache_dir: str = ".lfeval-cache"
    explainers: list = field(default_factory=lambda: list(FEATURE_EXPLAINERS))
    explainer_params: dict = field(default_factory=dict)
    example_methods: list = field(default_factory=lambda: list(EXAMPLE_METHODS))
    plugins: list = field(default_factory=list)
    metrics: list = field(default_factory=lambda: list(METRICS))
    metric_params: dict = field(default_factory=dict)
    n_explain: int = 128
    n_train_examples: int = 1000
    pretext_seeds: list = field(default_factory=lambda: [0, 1])
    pretext_feature_method: str = "GradientShap"
    pretext_example_method: str = "dknn"
    meta_metrics: list = field(default_factory=lambda: list(META_METRICS))
    meta_explainers: Optional[list] = None
    meta_pretext: Optional[str] = None
    meta_iterations: int = 2
    meta_perturbations: int = 3
    meta_samples: int = 64
    threads: object = "auto"
    quiet: bool = False
    backend: str = "serial"
    address: Optional[str] = None
    encoders: dict = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "highest"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _KINDS[f.name])
        check_run_name(self.name)
        _check_names("backend", [self.backend], BACKENDS)
        check_backend(self.backend, self.address)
        self.threads = check_threads(self.threads)
        for plugin in self.plugins:  # user explainers and metrics register themselves on import
            load_plugin(plugin)
        _check_names("pretexts", self.pretexts, PRETEXTS + VAE_PRETEXTS)
        _check_names("explainers", self.explainers, explainer_names())
        _check_names("example_methods", self.example_methods, EXAMPLE_METHODS)
        _check_names("metrics", self.metrics, CATALOGUE)
        _check_names("meta_metrics", self.meta_metrics, CATALOGUE)
        for name in self.meta_metrics:  # IEC compares the ranking of methods: it needs two or more
            if FEATURES in CATALOGUE[name].kinds:
                key, methods = "meta_explainers", self.meta_explainers or self.explainers
            else:
                key, methods = "example_methods", self.example_methods
            if len(methods) < 2:
                raise InvalidArgument(f"Meta-evaluating {name} compares explanation methods: name at least two in "
                                      f"`{key}`, or drop {name} from `meta_metrics`.")
        _check_names("meta_explainers", self.meta_explainers or [], explainer_names())
        _check_names("pretext_feature_method", [self.pretext_feature_method], explainer_names())
        _check_names("pretext_example_method", [self.pretext_example_method], EXAMPLE_METHODS)
        for name, spec in self.encoders.items():  # the user's own encoders (lfeval.models.user_encoders)
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", str(name)) or name in PRETEXTS + VAE_PRETEXTS:
                raise InvalidArgument(f"Encoder name {name!r} (config `encoders`) must be a safe name (letters, "
                                      "digits, '.', '_', '-') that is not a pretext task's.")
            check_spec(name, spec)
        if not self.encoder_names:
            raise InvalidArgument("Config `pretexts` and `encoders` are both empty; name a pretext task to train or "
                                  "an encoder of yours under [encoders.<name>].")
        self.device = resolve_device(self.device)
        _check_names("precision", [self.precision], PRECISIONS)
        data_key = canonical_name(self.data)
        _check_names("data", [data_key], available_data())
        if declared_modality(self.data) is not None:  # text: known from the name; else once the data load
            check_modality(self, declared_modality(self.data))
        if not self.explainers and not self.example_methods:
            raise InvalidArgument("Config `explainers` and `example_methods` are both empty; name at least one.")
        if self.meta_pretext is not None:
            _check_names("meta_pretext", [self.meta_pretext], self.encoder_names)
        _check_names("explainer_params", list(self.explainer_params), self.explainers)
        for name, params in self.explainer_params.items():  # a misspelled option fails now, not after training
            if not isinstance(params, dict):
                raise InvalidArgument(f"explainer_params[{name!r}] must be a table of options, got {params!r}.")
            get_explainer(name).check_options({k: v for k, v in params.items() if k not in _EXPLAIN_KEYS})
        _check_names("metric_params", list(self.metric_params), CATALOGUE)
        for name, params in self.metric_params.items():
            get_entry(name).check_params(params)
            step = params.get("features_in_step")  # its divisibility is checked on the data, by LabelFree
            if "features_in_step" in params and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
                raise InvalidArgument(f"metric_params[{name!r}] `features_in_step` must be an integer >= 1 that "
                                      "divides the features per channel of the data (64 for digits: 1, 2, 4, 8, 16, "
                                      f"32 or 64), got {step!r}.")
        for name in dict.fromkeys(self.metrics + self.meta_metrics):
            if "references" in CATALOGUE[name].needs and len(self.encoder_names) < 2:
                raise InvalidArgument(f"{name} compares encoders of different pretext tasks (or origins): name at "
                                      "least two `pretexts` or `encoders`, or drop it from `metrics` and "
                                      "`meta_metrics`.")
        if not self.pretext_seeds:
            raise InvalidArgument("Config `pretext_seeds` is empty; name at least one training seed, e.g. [0].")

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
        if not path.is_file():
            raise InvalidArgument(f"Config file {str(path)!r} does not exist (or is not a file).")
        try:
            with path.open("rb") as fh:
                values = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"Config file {str(path)!r} is not valid TOML: {exc}.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"Cannot read config file {str(path)!r}: {exc}.") from None
        if "run" in values:
            if not isinstance(values["run"], dict):
                raise InvalidArgument(f"Config `run` in {str(path)!r} must be a table ([run]).")
            if "encoders" in values:  # [encoders.<name>] tables may sit next to [run]
                values["run"] = {**values["run"], "encoders": {**values["run"].get("encoders", {}),
                                                               **values.pop("encoders")}}
            stray = sorted(k for k in values if k != "run")
            if stray:
                raise InvalidArgument(
                    f"Config file {str(path)!r} has keys {', '.join(map(repr, stray))} outside its [run] table, "
                    "where they would be ignored; move them under [run] (or drop the [run] header)."
                )
            values = values["run"]
        return cls.from_dict({**values, **overrides})

    @property
    def encoder_names(self) -> list:
        """The run's encoders: the pretext tasks it trains, then the user's encoders, by name."""
        return list(self.pretexts) + list(self.encoders)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def check_modality(config: RunConfig, modality) -> None:
    """Refuse, before anything runs, what does not apply to the data's modality. On discrete inputs (token ids,
    text): the pretext tasks (lfeval trains encoders of continuous inputs only; name yours under
    ``[encoders.<name>]``), explainers that need real values (CEM) and metrics that add noise or impute values
    (catalogue ``needs`` "continuous"). Called by :class:`RunConfig` when the data's name tells the modality,
    and by the run once the data are loaded."""
    from .modalities import get_modality

    m = get_modality(modality)
    if m.continuous:
        return
    problems = []
    if config.pretexts:
        problems.append(f"`pretexts` {list(config.pretexts)}: lfeval trains encoders of continuous inputs only; set "
                        "pretexts = [] and name a text encoder under [encoders.<name>], e.g. factory = "
                        '"lfeval.text:minilm_encoder"')
    used = config.explainers + (config.meta_explainers or [])
    if len(config.encoder_names) > 1:
        used = used + [config.pretext_feature_method]
    explainers = [e for e in dict.fromkeys(used) if get_explainer(e).continuous_only]
    if explainers:
        problems.append(f"explainers {explainers} add and remove amounts of real-valued features; drop them")
    metrics = [n for n in dict.fromkeys(config.metrics + config.meta_metrics) if "continuous" in CATALOGUE[n].needs]
    if metrics:
        fit = [n for n in CATALOGUE if "continuous" not in CATALOGUE[n].needs]
        problems.append(f"metrics {metrics} add noise to the inputs or impute values; drop them from `metrics` and "
                        f"`meta_metrics` (metrics for {m.name}: {', '.join(fit)})")
    if problems:
        raise NotApplicable(f"The data {config.data!r} are {m.name} (token ids): " + "; ".join(problems) + ".")


def resolve_device(device: str) -> str:
    """The config's ``device`` checked (:func:`lfeval.validation.check_device`, and a CUDA index this machine has)
    and normalised (``"cuda:0"`` stays, ``"cuda"`` stays): the one device the run's stages are given."""
    resolved = check_device(device)
    if resolved.type == "cuda" and resolved.index is not None:
        import torch

        count = torch.cuda.device_count()
        if resolved.index >= count:
            raise InvalidArgument(f"Config `device` {device!r} names GPU {resolved.index}, but this machine has "
                                  f"{count} (cuda:0 to cuda:{count - 1}); name one of them, or device='cpu'.")
    return str(resolved)


def check_run_name(name) -> str:
    """A run name is one safe path component: letters, digits, '.', '_', '-', not starting with '.'."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", name):
        raise InvalidArgument(
            f"Run name {name!r} is not a safe folder name: use 1-100 letters, digits, '.', '_' or '-', not "
            "starting with '.' (it becomes <out_dir>/<name>/)."
        )
    return name


#: the type of each config field: checked before anything runs (a TOML `true` is not the integer 1)
_KINDS = {
    "name": str, "out_dir": str, "data": str, "data_root": (str, None), "data_options": dict, "seed": (int, 0),
    "pretexts": [str], "latent_dim": (int, 1), "epochs": (int, 1), "checkpoints": (int, 0), "cache_dir": str,
    "explainers": [str], "explainer_params": dict, "example_methods": [str], "plugins": [str], "metrics": [str],
    "metric_params": dict, "n_explain": (int, 2), "n_train_examples": (int, 2), "pretext_seeds": [int],
    "pretext_feature_method": str, "pretext_example_method": str, "meta_metrics": [str],
    "meta_explainers": ([str], None), "meta_pretext": (str, None), "meta_iterations": (int, 1),
    "meta_perturbations": (int, 1), "meta_samples": (int, 2), "quiet": bool, "backend": str, "address": (str, None),
    "encoders": dict, "device": str, "precision": str, "threads": "threads",
}


def _check_type(key: str, value, kind) -> None:
    """Raise :class:`InvalidArgument` unless ``value`` has the field's kind (see :data:`_KINDS`)."""
    if kind == "threads":  # "auto" or a positive integer (lfeval.threads)
        try:
            check_threads(value)
        except InvalidArgument:
            raise InvalidArgument(f"Config `threads` must be 'auto' or a positive integer (torch's intra-op threads), "
                                  f"got {value!r}.") from None
        return
    if isinstance(kind, tuple) and kind[1] is None:  # optional
        if value is None:
            return
        kind = kind[0]
    if isinstance(kind, tuple):  # an integer with a minimum
        if isinstance(value, bool) or not isinstance(value, int) or value < kind[1]:
            raise InvalidArgument(f"Config `{key}` must be an integer >= {kind[1]}, got {value!r}.")
    elif isinstance(kind, list):
        item = kind[0]
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, item) and not (item is int and isinstance(v, bool)) for v in value):
            raise InvalidArgument(f"Config `{key}` must be a list of {item.__name__}s, got {value!r}.")
        if len(set(value)) != len(value):
            raise InvalidArgument(f"Config `{key}` names an entry twice: {list(value)}.")
    elif kind is bool:
        if not isinstance(value, bool):
            raise InvalidArgument(f"Config `{key}` must be true or false, got {value!r}.")
    elif not isinstance(value, kind) or (kind is str and key not in ("data_root",) and not value):
        raise InvalidArgument(f"Config `{key}` must be a non-empty {kind.__name__}, got {value!r}.")


def load_plugin(plugin: str) -> None:
    """Import a user module (``"pkg.module"``) or file (``"path/to/file.py"``) so the explainers and
    metrics it registers can be named in the config."""
    if not isinstance(plugin, str) or not plugin:
        raise InvalidArgument(f"Config `plugins` entries must be module names or .py paths, got {plugin!r}.")
    if plugin.endswith(".py"):
        path = Path(plugin).expanduser().resolve()
        if not path.is_file():
            raise InvalidArgument(f"Plugin file {str(path)!r} (config `plugins`) does not exist.")
        name = f"lfeval_plugin_{path.stem}"
        if name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(plugin)
    except ImportError as exc:
        raise InvalidArgument(f"Cannot import plugin module {plugin!r} (config `plugins`): {exc}.") from None


def _check_names(key: str, values, valid) -> None:
    for v in values:
        if v not in valid:
            close = difflib.get_close_matches(str(v), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownName(f"Unknown entry {v!r} in config `{key}`.{hint} Valid: {', '.join(map(str, valid))}.")
