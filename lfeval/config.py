"""The configuration of a main-job run (``lfeval run``): defaults, TOML loading, validation, plugins.

Each setting is resolved here once and passed down as it is: ``device`` (:func:`resolve_device`) and ``threads``
(:func:`lfeval.threads.check_threads`; the run enters :func:`lfeval.threads.scope` with it), from the config file
or the ``lfeval run`` flags alike.

Plugins (``plugins``: user modules or ``.py`` files whose explainers, metrics, example methods, data sets and
modalities register themselves on import) are loaded by one explicit, idempotent step, :func:`load_plugins`:
:meth:`RunConfig.from_dict` and :meth:`RunConfig.from_toml` call it before validating, the run calls it where it
starts (:class:`lfeval.pipeline.stages.RunData`) and every cell a worker process runs calls it first, since a
worker unpickles a :class:`RunConfig` without importing anything it names.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import tomllib
import torch

from .data import available as available_data
from .data import canonical_name, declared_modality
from .errors import InvalidArgument, NotApplicable, UnknownName
from .execution import BACKENDS, check_backend
from .explain.base import explainer_names, get_explainer
from .explain.examples import EXAMPLE_METHODS
from .explain.pairs import SIMILARITIES, takes_reference
from .metrics.catalogue import CATALOGUE, FEATURES, default_metrics, get_entry
from .modalities import get_modality
from .models.pretext import PRETEXTS
from .models.training import LR_SCHEDULES, min_batch_size, train_encoder
from .models.user_encoders import check_spec
from .models.vae import VAE_PRETEXTS
from .precision import PRECISIONS
from .registry import closest
from .threads import check_threads
from .validation import check_device, check_number, check_positive_int

FEATURE_EXPLAINERS = ("Saliency", "IntegratedGradients", "GradientShap", "DeepLift", "Random")
#: the default metrics: lfeval's label-free ones, two adapted stock faithfulness metrics, and the stock
#: metrics that are meaningful without labels (any name of lfeval.metrics.CATALOGUE works)
METRICS = default_metrics()
#: keyword arguments of lfeval.explain that every method takes
_EXPLAIN_KEYS = ("baseline", "batch_size", "seed", "abs", "reduce_axes")
META_METRICS = default_metrics(meta=True)  # the catalogue entries flagged meta_default
#: ``pairs`` value that pairs each explained input with its nearest training example in latent space
NEAREST = "nearest"
#: file types of a ``pairs`` file of index pairs
PAIR_FILES = (".csv", ".npy")
#: the pair settings: recorded in ``config.json`` only when ``pairs`` is set (:meth:`RunConfig.to_dict`)
PAIR_KEYS = ("pairs", "pair_explainers", "pair_similarity", "pair_metrics", "pair_maps", "pair_steps")
#: the pretext tasks' Adam settings passed to :func:`lfeval.models.train_encoder`, with its defaults; recorded in
#: ``config.json`` only when they differ from them (:meth:`RunConfig.to_dict`)
TRAINING_DEFAULTS = {k: inspect.signature(train_encoder).parameters[k].default
                     for k in ("batch_size", "lr", "lr_schedule")}


def pair_metric_names() -> tuple:
    """The catalogue's pair metrics (entries whose ``needs`` hold ``"pairs"``), in catalogue order: the default
    ``pair_metrics`` of a run with ``pairs``."""
    return tuple(n for n, e in CATALOGUE.items() if "pairs" in e.needs)


@dataclass
class RunConfig:
    """Settings of ``lfeval run``. Every field can be set in a TOML file or by a flag.

    The defaults are the demo: digits, five pretext encoders, five feature explainers, five
    example methods, the label-free metrics next to the stock ones meaningful without labels,
    and a small meta-evaluation; about 3 minutes on 2 CPU cores. ``backend = "ray"`` runs the
    per-encoder and per-metric stages as Ray tasks (on a local Ray, or the cluster at ``address``).

    ``threads``: torch's intra-op threads for every stage, ``"auto"`` (:func:`lfeval.threads.choose`:
    from the work's size, the process's cores and, after training, the load; ``LFEVAL_THREADS``
    overrides it) or an integer, checked here once (a digit string becomes an integer); the run enters
    :func:`lfeval.threads.scope` with it. It does not change stored results (training aside, see
    :mod:`lfeval.threads`), so a rerun may use another value.

    ``epochs``, ``batch_size``, ``lr``, ``lr_schedule``: how the pretext tasks' encoders train
    (:func:`lfeval.models.train_encoder`'s Adam settings and defaults; on a GPU, ``batch_size = 256``,
    ``lr = 1.41e-3``, ``lr_schedule = "cosine"`` reaches the default's validation loss in a quarter of its steps,
    and ``batch_size = 1024``, ``lr = 2e-3`` trades some of it for a sixteenth, see benchmarks/README.md).
    They enter the weight cache's key, and a changed one is a changed setting.

    ``plugins``: modules or ``.py`` files to import before the names are checked (:func:`load_plugins`).
    :meth:`from_dict` and :meth:`from_toml` load them; ``RunConfig(...)`` itself imports nothing, and an
    unknown name while a plugin is not loaded yet says so.

    ``pairs``: pair explanations (why do a and b have close representations?), off by default (``None``: no
    pair stage). ``"nearest"``: each explained input a with its nearest neighbour b among the run's training
    examples (``n_train_examples``), by the cosine of the encoder's latents, per encoder, an identical input
    excluded; or the path of a file of index pairs into the data set's test split (a ``.csv`` with integer
    columns ``a`` and ``b``, or a ``.npy`` of shape (P, 2); :func:`load_pair_indices`). ``pair_explainers``
    (default: the run's ``explainers`` that take a reference latent, and ``"Random"`` as the control if it is not
    among them), ``pair_similarity`` (``"cosine"`` or ``"dot"``), ``pair_metrics`` (default: the catalogue's
    pair metrics, :func:`pair_metric_names`; they are named here, never in ``metrics``), ``pair_maps`` (pairs
    whose interaction matrices are computed and drawn) and ``pair_steps`` (quadrature points of those
    matrices) configure the ``pairs-<encoder>`` stages (:func:`lfeval.pipeline.stages.pair_explanations`). A pair
    metric in ``meta_metrics`` (only with ``pairs``) is meta-evaluated over the pair explainers, each explained
    input with its partner (:func:`lfeval.pipeline.stages.meta_evaluation`).

    ``device``: where every stage computes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), checked and
    normalised here once. ``precision``: the arithmetic on a GPU (:mod:`lfeval.precision`: ``"highest"``, the
    default, equals the CPU within 1e-4 relative; ``"tf32"`` and ``"bf16"`` are faster and less exact; on the CPU
    ``"tf32"`` computes as ``"highest"`` and ``"bf16"`` autocasts, slowly). A changed ``precision`` is a changed
    setting (a rerun refuses it without ``--fresh``); a changed ``device`` is not: each stored stage records the
    device and precision it was computed with, a resume on another device keeps them and says so, and refuses
    when ``precision`` is not ``"highest"`` (see :class:`lfeval.pipeline.StageStore`). The weight cache is shared
    by devices: an encoder trained on one device is reused on another. ``cuda_graph`` (a CUDA ``device`` only):
    the pretext encoders train with each full batch's step replayed as a CUDA graph
    (:func:`lfeval.models.train_encoder`'s option); it changes the speed, not the draws or batches, and is not a
    changed setting (the weight cache's key leaves it out, as it leaves out the device).
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
    batch_size: Optional[int] = TRAINING_DEFAULTS["batch_size"]
    lr: float = TRAINING_DEFAULTS["lr"]
    lr_schedule: str = TRAINING_DEFAULTS["lr_schedule"]
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
    cuda_graph: bool = False
    pairs: Optional[str] = None
    pair_explainers: Optional[list] = None
    pair_similarity: str = "cosine"
    pair_metrics: Optional[list] = None
    pair_maps: int = 4
    pair_steps: int = 32

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name), _KINDS[f.name]))
        check_run_name(self.name)
        # names a plugin may register: an unknown one says when the config's plugins are not loaded yet
        names = functools.partial(_check_names, unloaded=[p for p in self.plugins if not plugin_loaded(p)])
        _check_names("backend", [self.backend], BACKENDS)
        check_backend(self.backend, self.address)
        _check_names("pretexts", self.pretexts, PRETEXTS + VAE_PRETEXTS)
        _check_names("lr_schedule", [self.lr_schedule], LR_SCHEDULES)
        for pretext in self.pretexts:
            if self.batch_size is not None and self.batch_size < min_batch_size(pretext):
                raise InvalidArgument(f"Config `batch_size` = {self.batch_size} cannot train the {pretext} pretext, "
                                      f"which needs batches of at least {min_batch_size(pretext)}; set `batch_size` "
                                      f">= {min_batch_size(pretext)}, or drop {pretext!r} from `pretexts`.")
        names("explainers", self.explainers, explainer_names())
        names("example_methods", self.example_methods, EXAMPLE_METHODS)
        names("metrics", self.metrics, CATALOGUE)
        names("meta_metrics", self.meta_metrics, CATALOGUE)
        for name in self.meta_metrics:  # IEC compares the ranking of methods: it needs two or more
            if "pairs" in get_entry(name).needs:  # over the pair explainers, once they are checked (_check_pairs)
                continue
            if FEATURES in get_entry(name).kinds:
                key, methods = "meta_explainers", self.meta_explainers or self.explainers
            else:
                key, methods = "example_methods", self.example_methods
            if len(methods) < 2:
                raise InvalidArgument(f"Meta-evaluating {name} compares explanation methods: name at least two in "
                                      f"`{key}`, or drop {name} from `meta_metrics`.")
        names("meta_explainers", self.meta_explainers or [], explainer_names())
        names("pretext_feature_method", [self.pretext_feature_method], explainer_names())
        names("pretext_example_method", [self.pretext_example_method], EXAMPLE_METHODS)
        for name, spec in self.encoders.items():  # the user's own encoders (lfeval.models.user_encoders)
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", str(name)) or name in PRETEXTS + VAE_PRETEXTS:
                raise InvalidArgument(f"Encoder name {name!r} (config `encoders`) must be a safe name (letters, "
                                      "digits, '.', '_', '-') that is not a pretext task's.")
            check_spec(name, spec)
        if not self.encoder_names:
            raise InvalidArgument("Config `pretexts` and `encoders` are both empty; name a pretext task to train or "
                                  "an encoder of yours under [encoders.<name>].")
        self.device = resolve_device(self.device)
        if self.cuda_graph and not self.device.startswith("cuda"):
            raise InvalidArgument(f"Config `cuda_graph` = true records the training steps as CUDA graphs and needs a "
                                  f"CUDA `device`, got device = {self.device!r}; set device = \"cuda\" or drop "
                                  "cuda_graph.")
        _check_names("precision", [self.precision], PRECISIONS)
        names("data", [canonical_name(self.data)], available_data())
        if declared_modality(self.data) is not None:  # text: known from the name; else once the data load
            check_modality(self, declared_modality(self.data))
        if not self.explainers and not self.example_methods:
            raise InvalidArgument("Config `explainers` and `example_methods` are both empty; name at least one.")
        if self.meta_pretext is not None:
            _check_names("meta_pretext", [self.meta_pretext], self.encoder_names)
        self._check_pairs(names)
        _check_names("explainer_params", list(self.explainer_params),
                     list(dict.fromkeys(self.explainers + self.explainers_of_pairs)))
        for name, params in self.explainer_params.items():  # a misspelled option fails now, not after training
            if not isinstance(params, dict):
                raise InvalidArgument(f"explainer_params[{name!r}] must be a table of options, got {params!r}.")
            get_explainer(name).check_options({k: v for k, v in params.items() if k not in _EXPLAIN_KEYS})
        names("metric_params", list(self.metric_params), CATALOGUE)
        for name, params in self.metric_params.items():
            get_entry(name).check_params(params)
            if "features_in_step" in params:  # its divisibility is checked on the data, by LabelFree
                _check_features_in_step(name, params["features_in_step"])
        for name in dict.fromkeys(self.metrics + self.meta_metrics):
            if "references" in get_entry(name).needs and len(self.encoder_names) < 2:
                raise InvalidArgument(f"{name} compares encoders of different pretext tasks (or origins): name at "
                                      "least two `pretexts` or `encoders`, or drop it from `metrics` and "
                                      "`meta_metrics`.")
        if not self.pretext_seeds:
            raise InvalidArgument("Config `pretext_seeds` is empty; name at least one training seed, e.g. [0].")

    def _check_pairs(self, names) -> None:
        """The pair settings (class docstring): a pair metric is named in ``pair_metrics`` (or, to meta-evaluate it,
        ``meta_metrics``) only, and only with ``pairs``; a ``pairs`` file exists and holds valid index pairs (their
        range is checked on the data), two or more for a meta-evaluation; a meta-evaluation compares two or more
        pair explainers."""
        names("pair_metrics", self.pair_metrics or [], CATALOGUE)
        for name in self.pair_metrics or []:
            if "pairs" not in get_entry(name).needs:
                raise InvalidArgument(f"Config `pair_metrics` names {name}, which does not score pair explanations; "
                                      f"move it to `metrics` (pair metrics: {', '.join(pair_metric_names())}).")
        misplaced = [n for n in self.metrics if "pairs" in get_entry(n).needs]
        if misplaced:
            raise InvalidArgument(f"Config `metrics` names pair metric(s) {misplaced}, which score pair explanations "
                                  "(each explained input with a partner): name them in `pair_metrics` and set "
                                  "`pairs` (\"nearest\" or a file of index pairs), or drop them.")
        meta_pairs = [n for n in self.meta_metrics if "pairs" in get_entry(n).needs]
        if meta_pairs and self.pairs is None:
            raise InvalidArgument(f"Config `meta_metrics` names pair metric(s) {meta_pairs}, which meta-evaluate pair "
                                  "explanations (each explained input with a partner), but pair explanations are off: "
                                  "set `pairs` (\"nearest\" or a file of index pairs), or drop them from "
                                  "`meta_metrics`.")
        _check_names("pair_similarity", [self.pair_similarity], SIMILARITIES)
        if self.pairs is None:
            given = [k for k in PAIR_KEYS[1:] if getattr(self, k) != _PAIR_DEFAULTS[k]]
            if given:
                raise InvalidArgument(f"Config {', '.join(f'`{k}`' for k in given)} configure(s) pair explanations, "
                                      "which are off: set `pairs` (\"nearest\" or a file of index pairs), or drop "
                                      "them.")
            return
        if self.pairs != NEAREST:
            n_pairs = len(load_pair_indices(self.pairs))
            if meta_pairs and n_pairs < 2:
                raise InvalidArgument(f"Config `pairs` file {str(self.pairs)!r} holds {n_pairs} pair, but "
                                      f"meta-evaluating {meta_pairs[0]} compares scores over pairs (Wilcoxon, "
                                      "rankings): give at least 2 pairs (tens for meaningful p-values), or drop the "
                                      "pair metrics from `meta_metrics`.")
        names("pair_explainers", self.pair_explainers or [], explainer_names())
        for name in self.pair_explainers or []:
            if not takes_reference(get_explainer(name)):
                fit = [n for n in explainer_names() if takes_reference(get_explainer(n))]
                raise InvalidArgument(f"Config `pair_explainers` names {name}, which does not take a reference "
                                      "latent, so it cannot explain a pair similarity; drop it (pair methods: "
                                      f"{', '.join(fit)}).")
        if not self.explainers_of_pairs:
            raise InvalidArgument("Config `pair_explainers` is empty; name at least one method, e.g. "
                                  "[\"IntegratedGradients\", \"Random\"].")
        for name in meta_pairs:  # IEC compares the ranking of the pair explainers: it needs two or more
            if len(self.explainers_of_pairs) < 2:
                raise InvalidArgument(f"Meta-evaluating {name} compares pair explanation methods: name at least two "
                                      f"in `pair_explainers`, or drop {name} from `meta_metrics`.")

    @property
    def explainers_of_pairs(self) -> list:
        """The pair stage's explainers (``[]`` without ``pairs``): ``pair_explainers``, or by default the run's
        ``explainers`` that take a reference latent and ``"Random"`` (the control) when no control is among
        them."""
        if self.pairs is None:
            return []
        if self.pair_explainers is not None:
            return list(self.pair_explainers)
        names = [e for e in self.explainers if takes_reference(get_explainer(e))]
        if not any(getattr(get_explainer(e), "control", False) is True for e in names):
            names.append("Random")
        return names

    @property
    def metrics_of_pairs(self) -> list:
        """The pair stage's metrics (``[]`` without ``pairs``): ``pair_metrics``, by default the catalogue's pair
        metrics (:func:`pair_metric_names`)."""
        if self.pairs is None:
            return []
        return list(self.pair_metrics if self.pair_metrics is not None else pair_metric_names())

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from a dict, naming the closest valid key for a misspelled one; the ``plugins`` it lists are
        loaded first (:func:`load_plugins`), so the names they register can be checked."""
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                raise UnknownName(f"Unknown config key {key!r}.{closest(key, valid)} Valid keys: {', '.join(valid)}.")
        load_plugins(values.get("plugins", ()))
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
        """The settings as a dict (``config.json``); the pair settings (:data:`PAIR_KEYS`) only with ``pairs``, and
        the training settings (:data:`TRAINING_DEFAULTS`) only where they are not the defaults, so a run records what
        it did before they existed."""
        out = dataclasses.asdict(self)
        if self.pairs is None:
            for key in PAIR_KEYS:
                out.pop(key)
        for key, default in TRAINING_DEFAULTS.items():
            if out[key] == default:
                out.pop(key)
        return out

    @property
    def training(self) -> dict:
        """The pretext tasks' Adam settings, as keyword arguments of :func:`lfeval.models.train_encoder`."""
        return {key: getattr(self, key) for key in TRAINING_DEFAULTS}

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def check_modality(config: RunConfig, modality) -> None:
    """Refuse, before anything runs, what does not apply to the data's modality. On discrete inputs (token ids,
    text): the pretext tasks (lfeval trains encoders of continuous inputs only; name yours under
    ``[encoders.<name>]``), explainers that need real values (CEM) and metrics that add noise or impute values
    (catalogue ``needs`` "continuous"). Called by :class:`RunConfig` when the data's name tells the modality,
    and by the run once the data are loaded."""
    m = get_modality(modality)
    if m.continuous:
        return
    problems = []
    if config.pretexts:
        problems.append(f"`pretexts` {list(config.pretexts)}: lfeval trains encoders of continuous inputs only; set "
                        "pretexts = [] and name a text encoder under [encoders.<name>], e.g. factory = "
                        '"lfeval.text:minilm_encoder"')
    used = config.explainers + (config.meta_explainers or []) + config.explainers_of_pairs
    if len(config.encoder_names) > 1:
        used = used + [config.pretext_feature_method]
    explainers = [e for e in dict.fromkeys(used) if get_explainer(e).continuous_only]
    if explainers:
        problems.append(f"explainers {explainers} add and remove amounts of real-valued features; drop them")
    metrics = [n for n in dict.fromkeys(config.metrics + config.meta_metrics + config.metrics_of_pairs)
               if "continuous" in get_entry(n).needs]
    if metrics:
        fit = [n for n in CATALOGUE if "continuous" not in get_entry(n).needs]
        problems.append(f"metrics {metrics} add noise to the inputs or impute values; drop them from `metrics` and "
                        f"`meta_metrics` (metrics for {m.name}: {', '.join(fit)})")
    if problems:
        raise NotApplicable(f"The data {config.data!r} are {m.name} (token ids): " + "; ".join(problems) + ".")


def resolve_device(device: str) -> str:
    """The config's ``device`` checked (:func:`lfeval.validation.check_device`, and a CUDA index this machine has)
    and normalised (``"cuda:0"`` stays, ``"cuda"`` stays): the one device the run's stages are given."""
    resolved = check_device(device)
    if resolved.type == "cuda" and resolved.index is not None:
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
    "pretexts": [str], "latent_dim": (int, 1), "epochs": (int, 1), "batch_size": ((int, 1), None),
    "lr": "positive", "lr_schedule": str, "checkpoints": (int, 0), "cache_dir": str,
    "explainers": [str], "explainer_params": dict, "example_methods": [str], "plugins": [str], "metrics": [str],
    "metric_params": dict, "n_explain": (int, 2), "n_train_examples": (int, 2), "pretext_seeds": [int],
    "pretext_feature_method": str, "pretext_example_method": str, "meta_metrics": [str],
    "meta_explainers": ([str], None), "meta_pretext": (str, None), "meta_iterations": (int, 1),
    "meta_perturbations": (int, 1), "meta_samples": (int, 2), "quiet": bool, "backend": str, "address": (str, None),
    "encoders": dict, "device": str, "precision": str, "cuda_graph": bool, "threads": "threads",
    "pairs": (str, None),
    "pair_explainers": ([str], None), "pair_similarity": str, "pair_metrics": ([str], None), "pair_maps": (int, 0),
    "pair_steps": (int, 1),
}
#: the pair settings' defaults (set without ``pairs``, they are refused)
_PAIR_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.name in PAIR_KEYS}


def load_pair_indices(path) -> np.ndarray:
    """The index pairs of a config ``pairs`` file: an int64 array (P, 2) of rows ``(a, b)``, indices into the data
    set's test split (a explained, b its partner). A ``.csv`` has two integer columns ``a`` and ``b`` (a header
    row); a ``.npy`` holds a (P, 2) integer array. Refuses (:class:`lfeval.errors.InvalidArgument`, naming the
    file) a missing or unreadable file, another type, another shape, non-integers, negative indices and an empty
    file; the indices' range is the data's, checked by :func:`check_pair_range`."""
    p = Path(str(path)).expanduser()
    where = f"Config `pairs` file {str(p)!r}"
    if p.suffix.lower() not in PAIR_FILES:
        raise InvalidArgument(f"Config `pairs` must be {NEAREST!r} or the path of a file of index pairs ending in "
                              f"{' or '.join(PAIR_FILES)}, got {str(path)!r}.")
    if not p.is_file():
        raise InvalidArgument(f"{where} does not exist (or is not a file).")
    try:
        if p.suffix.lower() == ".npy":
            values = np.load(p, allow_pickle=False)
        else:
            table = pd.read_csv(p)
            if list(table.columns) != ["a", "b"]:
                raise InvalidArgument(f"{where} must have exactly two columns named a and b (a header row `a,b`), "
                                      f"got columns {list(map(str, table.columns))}.")
            values = table.to_numpy()
    except InvalidArgument:
        raise
    except pd.errors.EmptyDataError:
        raise InvalidArgument(f"{where} is empty; write a header `a,b` and one row per pair.") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidArgument(f"{where} cannot be read: {exc}.") from None
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != 2:
        raise InvalidArgument(f"{where} must hold index pairs of shape (P, 2), got shape {values.shape}.")
    if len(values) == 0:
        raise InvalidArgument(f"{where} holds no pairs; give at least one row (a, b).")
    if values.dtype.kind not in "iu":
        whole = values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all()
        if not whole:
            raise InvalidArgument(f"{where} must hold integer indices, got {values.dtype} values such as "
                                  f"{values.ravel()[:3].tolist()}.")
    values = values.astype(np.int64)
    if (values < 0).any():
        raise InvalidArgument(f"{where} holds negative indices (row {int(np.argwhere(values < 0)[0, 0])}); indices "
                              "count from 0 in the test split.")
    return values


def check_pair_range(indices: np.ndarray, n_test: int, path) -> np.ndarray:
    """``indices`` (:func:`load_pair_indices`) if every index is below ``n_test``, the size of the data's test
    split, else :class:`lfeval.errors.InvalidArgument` naming the first row out of range."""
    bad = np.argwhere(indices >= n_test)
    if len(bad):
        row = int(bad[0, 0])
        raise InvalidArgument(f"Config `pairs` file {str(path)!r} row {row} has index {int(indices[row].max())}, but "
                              f"the test split holds {n_test} inputs (indices 0 to {n_test - 1}); fix the file.")
    return indices


def _check_type(key: str, value, kind):
    """``value`` if it has the field's kind (see :data:`_KINDS`; ``threads`` resolved by
    :func:`lfeval.threads.check_threads`), else :class:`InvalidArgument`."""
    if kind == "threads":  # "auto" or a positive integer (lfeval.threads): the run's one check of it
        try:
            return check_threads(value)
        except InvalidArgument:
            raise InvalidArgument(f"Config `threads` must be 'auto' or a positive integer (torch's intra-op threads), "
                                  f"got {value!r}.") from None
    if isinstance(kind, tuple) and kind[1] is None:  # optional
        if value is None:
            return value
        kind = kind[0]
    if kind == "positive":  # a finite number > 0
        try:
            return check_number(value, key, strict=True)
        except InvalidArgument as exc:
            raise InvalidArgument(f"Config {exc}") from None
    if isinstance(kind, tuple):  # an integer with a minimum
        try:
            check_positive_int(value, key, minimum=kind[1])
        except InvalidArgument as exc:
            raise InvalidArgument(f"Config {exc}") from None
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
    return value


def _check_features_in_step(metric: str, step) -> None:
    """``metric_params[metric]["features_in_step"]`` is a positive integer (its divisibility is the data's)."""
    try:
        check_positive_int(step, "features_in_step")
    except InvalidArgument:
        raise InvalidArgument(f"metric_params[{metric!r}] `features_in_step` must be an integer >= 1 that divides "
                              "the features per channel of the data (64 for digits: 1, 2, 4, 8, 16, 32 or 64), got "
                              f"{step!r}.") from None


def _plugin_module(plugin: str) -> str:
    """The ``sys.modules`` name a plugin is imported as: a ``.py`` file's ``lfeval_plugin_<stem>``, else itself."""
    return f"lfeval_plugin_{Path(plugin).stem}" if plugin.endswith(".py") else plugin


def plugin_loaded(plugin) -> bool:
    """Whether the plugin module or file ``plugin`` (an entry of config ``plugins``) is imported in this process."""
    return isinstance(plugin, str) and bool(plugin) and _plugin_module(plugin) in sys.modules


def load_plugin(plugin: str) -> str:
    """Import a user module (``"pkg.module"``) or file (``"path/to/file.py"``) so the explainers and
    metrics it registers can be named in the config; a loaded one is not imported again. Returns the reference
    another process loads it by (a file's absolute path)."""
    if not isinstance(plugin, str) or not plugin:
        raise InvalidArgument(f"Config `plugins` entries must be module names or .py paths, got {plugin!r}.")
    if plugin.endswith(".py"):
        path = Path(plugin).expanduser().resolve()
        name = _plugin_module(plugin)
        if name in sys.modules:
            return str(path)
        if not path.is_file():
            raise InvalidArgument(f"Plugin file {str(path)!r} (config `plugins`) does not exist.")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:  # a half-run plugin is not loaded: the next call tries again and reports it
            sys.modules.pop(name, None)
            raise
        return str(path)
    try:
        importlib.import_module(plugin)
    except ImportError as exc:
        raise InvalidArgument(f"Cannot import plugin module {plugin!r} (config `plugins`): {exc}.") from None
    return plugin


def load_plugins(plugins) -> tuple:
    """Import every plugin of ``plugins`` (config ``plugins``) that is not imported yet: the one step that
    makes their names known, in the process that starts a run and in each worker process before a cell runs.
    Idempotent. Returns the references other processes load them by (:func:`load_plugin`)."""
    if isinstance(plugins, str) or not isinstance(plugins, (list, tuple)):
        raise InvalidArgument(f"Config `plugins` must be a list of strs (modules or .py files), got {plugins!r}.")
    return tuple(load_plugin(p) for p in plugins)


def _check_names(key: str, values, valid, unloaded=()) -> None:
    """Each of ``values`` is among ``valid`` (a list or a registry), else :class:`UnknownName` naming the closest;
    ``unloaded``: plugins of the config not imported yet, which might register the name."""
    for v in values:
        if v not in valid:
            hint = (f" Config `plugins` lists {', '.join(map(repr, unloaded))}, not loaded yet: build the config with "
                    "RunConfig.from_dict or RunConfig.from_toml, which load them, or call "
                    "lfeval.config.load_plugins(plugins) first." if unloaded else "")
            raise UnknownName(f"Unknown entry {v!r} in config `{key}`.{closest(v, valid)} Valid: "
                              f"{', '.join(map(str, valid))}.{hint}")
