"""The stages of ``lfeval run``. Each returns a picklable result that :class:`StageStore` keeps.

Every stage seeds NumPy's and torch's global generators itself right before its random work
(Quantus draws its perturbations from ``np.random``), so a stage gives the same numbers whether
it runs in one go, after a resume, or after other stages were loaded from disk.

Devices: the encoders live on the run's device (:attr:`RunData.device`) and every stage computes there; data
meet them through :meth:`lfeval.Encoder.place` (the training examples stay resident there). Results come back
to the CPU only at the Quantus boundary (NumPy) and as stored stages: float32 arrays, whatever the encoder's
device and dtype, so the CSVs do not depend on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import warnings

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import data as data_mod
from .. import threads as threads_mod
from ..config import NEAREST, check_modality, check_pair_range, load_pair_indices, load_plugins
from ..encoder import Encoder
from ..errors import InvalidInput, LabelsRequired
from ..evaluation import evaluate
from ..execution import portable
from ..explain import examples as example_mod
from ..explain.base import get_explainer
from ..explain.interactions import completeness_target, interactions
from ..explain.pairs import explain_pairs, similarity
from ..explain.precomputed import PrecomputedExplanations
from ..memory import encode_chunks
from ..meta import LabelFreeMetaEvaluation, default_test_suite
from ..metrics import pretext_correlation_table, score_direction
from ..metrics.catalogue import EXAMPLES, FEATURES, MetricContext, build_metric, get_entry
from ..metrics.fast_paths import quick_checks
from ..metrics.label_free_adapter import check_features_in_step
from ..metrics.similarity_shift import PairExplainFunc
from ..models import PretextModel, build_encoder, probe_accuracy, train_encoder
from ..models.probe import latent_spread
from ..models.user_encoders import load_encoder


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def expected_warnings_silenced():
    """Silence warnings that are expected in a run: Quantus' "perturbation caused no change" (masking
    a black background with black), "ignores y_batch" (labels go to every metric of the examples) and
    captum's and torch's notices."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*didn't cause change in input.*")
        warnings.filterwarnings("ignore", message=".*ignores `y_batch`.*")
        warnings.filterwarnings("ignore", message=".*Setting forward, backward hooks.*")  # captum's DeepLift
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated.*")
        yield


class RunData:
    """The data, the explained batches and the (lazily trained or loaded) encoders of a run."""

    def __init__(self, config):
        self.config = c = config
        #: the config's plugins, as every process loads them (:func:`lfeval.config.load_plugins`): this one now,
        #: a worker before each cell it runs (:mod:`lfeval.pipeline.job`)
        self.plugins = load_plugins(c.plugins)
        self.ds = data_mod.load(c.data, root=c.data_root, seed=c.seed, **c.data_options)
        self.names = c.encoder_names
        n, m = min(c.n_explain, len(self.ds.x_test)), min(c.n_train_examples, len(self.ds.x_train))
        self.x, self.x_train = self.ds.x_test[:n], self.ds.x_train[:m]
        self.y = self.ds.y_test[:n] if self.ds.has_labels else None
        self.y_train = self.ds.y_train[:m] if self.ds.has_labels else None
        self.x_np = self.x.numpy()
        self.device = torch.device(c.device)  # RunConfig resolved it; a Ray worker's may differ (to())
        self._encoders = {}
        self._resident = {}  # (device, dtype) -> x_train there
        self._work = None
        #: the index pairs of a ``pairs`` file (a, b rows into the test split), checked against the data; else None
        self.pair_index = None
        if c.pairs is not None and c.pairs != NEAREST:
            self.pair_index = check_pair_range(load_pair_indices(c.pairs), len(self.ds.x_test), c.pairs)
        self.check_labels()
        self.check_metric_params()
        check_modality(c, self.ds.modality)  # a data set whose name did not tell its modality (a plugin's)
        for name in c.encoders:  # the user's encoders: loaded and checked on the data before any stage runs
            self.encoder(name)

    def check_labels(self) -> None:
        """Without labels, refuse (before any stage) what needs them: label-scored metrics, the classification
        pretext."""
        if self.ds.has_labels:
            return
        c = self.config
        needs = [m for m in dict.fromkeys(c.metrics + c.meta_metrics) if "labels" in get_entry(m).needs]
        if "classification" in c.pretexts:
            needs.append("the classification pretext")
        if needs:
            raise LabelsRequired(f"{self.ds.name} has no labels, which {', '.join(needs)} need; drop them from the "
                                 "config, or give labels (y_train/y_test) with the data.")

    def check_metric_params(self) -> None:
        """A metric's ``features_in_step`` must divide this data's features per channel: refused before any
        training, not at the scoring stage (``metric_params`` in the config)."""
        for name, params in self.config.metric_params.items():
            step = (params or {}).get("features_in_step")
            if step is not None:
                check_features_in_step(step, (1, *self.ds.input_shape), name=f"metric_params[{name!r}]")

    @property
    def work(self) -> float:
        """Multiply-adds of one encoder pass over the explained batch: the size :func:`lfeval.threads.choose`
        weighs (the largest user encoder, else an untrained network of the run's architecture, so nothing
        trains to measure it)."""
        if self._work is None:
            c = self.config
            nets = [self.encoder(name) for name in c.encoders]
            if c.pretexts:
                nets.append(build_encoder(self.ds.modality, self.ds.input_shape, c.latent_dim))
            self._work = max(threads_mod.work_of(net, self.ds.input_shape, batch=len(self.x)) for net in nets)
        return self._work

    def limited(self, compute):
        """Run ``compute()`` with the run's intra-op threads for its work: the setting of the enclosing
        :func:`lfeval.threads.scope` (``lfeval run`` enters it with config ``threads``), else ``"auto"``."""
        with threads_mod.limit(work=self.work):
            return compute()

    @property
    def n_features(self) -> int:
        return self.ds.modality.n_features(self.ds.input_shape)

    def encoder(self, name: str, seed=None):
        """The encoder called ``name``: the user's (``[encoders.<name>]``, loaded once; ``seed`` is moot) or
        the one of pretext task ``name`` trained with ``seed`` (default: the run's), via the weight cache."""
        c = self.config
        seed = c.seed if seed is None or name in c.encoders else seed
        if (name, seed) not in self._encoders:
            if name in c.encoders:
                self._encoders[(name, seed)] = load_encoder(name, c.encoders[name], self.ds, device=self.device,
                                                            seed=c.seed)
            else:
                self._encoders[(name, seed)] = train_encoder(
                    self.ds, pretext=name, latent_dim=c.latent_dim, epochs=c.epochs, **c.training, seed=seed,
                    cache_dir=c.cache_dir, checkpoints=c.checkpoints, device=self.device,
                    cuda_graph=c.cuda_graph and self.device.type == "cuda",  # a Ray cell may have no GPU
                    display_progressbar=not c.quiet)  # threads: the run's scope (lfeval.threads)
        return self._encoders[(name, seed)]

    def to(self, device) -> "RunData":
        """Compute on ``device`` from now on: the loaded encoders move there (in place), later ones load there."""
        device = torch.device(device)
        if device != self.device:
            self.device, self._resident = device, {}
        for enc in self._encoders.values():
            if enc.device != device:
                enc.to(device)
        return self

    def portable(self) -> "RunData":
        """A copy to send to other processes (Ray workers), its encoders on the CPU (a worker sees other GPUs,
        renumbered, or none); the worker moves them to its device with :meth:`to`."""
        out = object.__new__(RunData)
        out.__dict__.update(self.__dict__, _encoders={k: portable(e) for k, e in self._encoders.items()},
                            _resident={}, device=torch.device("cpu"))
        return out

    def train_examples(self, model) -> torch.Tensor:
        """The run's training examples where ``model`` (an :class:`lfeval.Encoder`) computes, kept there."""
        if not isinstance(model, Encoder):
            return self.x_train
        key = (model.device, model.data_dtype)
        if key not in self._resident:
            self._resident[key] = model.place(self.x_train)
        return self._resident[key]

    def example_methods(self, name: str) -> tuple:
        """``(methods, skipped)``: the run's example methods the encoder ``name`` supports, and
        ``{method: why}`` for the loss-based ones it cannot (a user encoder without a loss or checkpoints)."""
        enc, skipped = self.encoder(name), {}
        for method in self.config.example_methods:
            if method in example_mod.LOSS_BASED and enc.loss is None:
                skipped[method] = ("no pretext loss to differentiate (give `loss` in its [encoders] table; "
                                   "TorchScript and exported encoders cannot be differentiated per example)")
            elif method == "tracin" and not enc.checkpoints:
                skipped[method] = "no training checkpoints (give `checkpoints` in its [encoders] table)"
        return tuple(m for m in self.config.example_methods if m not in skipped), skipped

    def load_encoders(self, seeds=()) -> None:
        """Train (or load from the weight cache) every encoder of the run's pretexts with its seed and
        ``seeds``, so that a copy of this object sent to workers has every encoder the stages use."""
        for p in self.names:
            for s in dict.fromkeys([self.config.seed, *(seeds if p in self.config.pretexts else ())]):
                self.encoder(p, s)

    def bar(self, iterable, desc: str):
        return tqdm(iterable, desc=desc, disable=self.config.quiet, leave=False)

    def metric_context(self, pretext: str, attributions: dict | None = None,
                       matrices: dict | None = None) -> MetricContext:
        """What the registry's metrics need to score the ``pretext`` encoder: the other encoders as
        references and explain functions that serve the stored explanations."""
        c = self.config
        refs = {p: self.encoder(p) for p in self.names if p != pretext}
        return MetricContext(n_features=self.n_features, seed=c.seed,
                             y_train=None if self.y_train is None else self.y_train.numpy(),
                             x_train=self.x_train.numpy(), references=refs,
                             explain_func=self.feature_cache(attributions),
                             example_explain_func=self.example_cache(matrices),
                             patch_size=self.ds.modality.patch_size(self.ds.input_shape),
                             encoder=self.encoder(pretext))

    def explainer_options(self, method: str) -> dict:
        """The run's options of a feature explainer: its ``explainer_params`` and, for a method that declares
        ``training_data`` (COCOA's pool), the run's training examples."""
        data = {"x_train": self.x_train.numpy(), "y_train": None if self.y_train is None else self.y_train.numpy()}
        return {**{k: data[k] for k in get_explainer(method).training_data},
                **self.config.explainer_params.get(method, {})}

    def feature_cache(self, attributions: dict | None = None) -> PrecomputedExplanations:
        """Explain function with the run's per-method options (methods that take training data, such as COCOA's
        pool, get the run's training examples) and, if given, the stored attributions
        ``{pretext: {method: array}}`` of the explained batch."""
        params = {m: self.explainer_options(m) for m in dict.fromkeys(self.config.explainers +
                                                                       (self.config.meta_explainers or []))}
        cache = PrecomputedExplanations(method_params=params)
        for pretext, per_method in (attributions or {}).items():
            for method, a in per_method.items():
                cache.put(self.encoder(pretext), self.x_np, a, method=method, seed=self.config.seed)
        return cache

    def example_cache(self, matrices: dict | None = None) -> PrecomputedExplanations:
        cache = PrecomputedExplanations(fallback=self.example_explain)
        for pretext, per_method in (matrices or {}).items():
            for method, a in per_method.items():
                cache.put(self.encoder(pretext), self.x_np, a, method=method)
        return cache

    def example_explain(self, model, inputs, targets=None, method: str = "cosine", **kwargs) -> np.ndarray:
        """Example importance of ``inputs`` over the run's training examples (Quantus signature).

        Loss-based methods of a classification-pretext encoder differentiate the cross-entropy: the
        training examples use their (training) labels, the explained inputs the class the pretext
        model predicts; test labels never explain.
        """
        full = model.pretext_model if isinstance(model, Encoder) else None
        if method in example_mod.LOSS_BASED and isinstance(full, PretextModel) and full.task.needs_labels:
            with torch.no_grad():
                x = model.network_input(torch.as_tensor(np.asarray(inputs)))
                predicted = full(x).argmax(1)
            kwargs = {"y_train": self.y_train, "y_test": predicted, **kwargs}
        if method == "simplex":
            kwargs.setdefault("seed", self.config.seed)
        return example_mod.explain_func(model, inputs, targets, method=method, x_train=self.train_examples(model),
                                        display_progressbar=False, **kwargs)


# ---------------------------------------------------------------------------------------------- stages
def encoder_summary(rd: RunData) -> pd.DataFrame:
    """One row per encoder (the ``pretext`` column holds its name): its origin, training epochs and best
    validation loss (lfeval-trained ones), a linear-probe accuracy (and the split it used), the collapse
    diagnostics of :func:`lfeval.models.probe.diagnose` and the example methods it cannot run."""
    rows = []
    for name in rd.bar(rd.names, "encoders"):
        enc = rd.encoder(name)
        losses = enc.history.get("val_loss", [])
        if rd.ds.has_labels:
            accuracy, split = probe_accuracy(enc, rd.ds, seed=rd.config.seed, with_note=True)
        else:
            accuracy, split = float("nan"), "skipped: the data have no labels"
        diag = enc.history.get("diagnostics") or {"spread": latent_spread(enc, rd.ds.x_train[:1024]),
                                                   "problem": ""}
        ratio = diag.get("reconstruction_ratio")
        skipped = rd.example_methods(name)[1]
        rows.append({"pretext": name, "origin": enc.config.get("source", "pretext") if name in rd.config.encoders
                     else "pretext", "epochs": len(losses) or float("nan"),
                     "best_val_loss": min(losses) if losses else float("nan"), "probe_accuracy": accuracy,
                     "probe_split": split, "latent_spread": diag.get("spread", float("nan")),
                     "reconstruction_ratio": float("nan") if ratio is None else ratio,
                     "collapsed": bool(diag.get("problem")), "diagnosis": diag.get("problem") or "ok",
                     "skipped_examples": "; ".join(f"{m}: {why}" for m, why in skipped.items()) or "none"})
    return pd.DataFrame(rows).set_index("pretext")


def feature_attributions(rd: RunData, pretext: str) -> dict:
    """``{method: (N, *input_shape) array}``: label-free attributions of the explained batch (paper Eq. 3)."""
    enc, cache = rd.encoder(pretext), rd.feature_cache()
    return {m: np.asarray(cache(enc, rd.x_np, method=m, seed=rd.config.seed), dtype=np.float32)
            for m in rd.bar(rd.config.explainers, f"attributions {pretext}")}


def example_importance(rd: RunData, pretext: str) -> dict:
    """``{method: (N, n_train) array}``: example importance of the explained batch."""
    enc = rd.encoder(pretext)
    return {m: rd.example_explain(enc, rd.x_np, method=m).astype(np.float32)
            for m in rd.bar(rd.example_methods(pretext)[0], f"examples {pretext}")}


def _summarise(per_sample) -> tuple:
    s = np.asarray(per_sample, dtype=float).ravel()
    finite = s[np.isfinite(s)]
    if len(finite) == 0:
        return float("nan"), float("nan"), 0
    sem = finite.std(ddof=1) / np.sqrt(len(finite)) if len(finite) > 1 else 0.0
    return float(finite.mean()), float(sem), int(len(finite))


def score(rd: RunData, pretext: str, attributions: dict, matrices: dict) -> dict:
    """Score one encoder's explanations with every configured metric through :func:`lfeval.evaluate`.

    Returns ``{"scores": long DataFrame, "directions": {metric: "higher"|"lower"},
    "curves": {metric: {method: Curve}}}`` (curves of the catalogue entries that declare one).
    """
    c = rd.config
    enc = rd.encoder(pretext)
    ctx = rd.metric_context(pretext, attributions, matrices)
    rows, directions, curves = [], {}, {}
    jobs = [(FEATURES, m, ctx.explain_func) for m in c.explainers] + \
           [(EXAMPLES, m, ctx.example_explain_func) for m in rd.example_methods(pretext)[0]]
    for kind, method, explain_func in rd.bar(jobs, f"scores {pretext}"):
        # the reference encoders that can explain by this method (a user encoder may lack TracIn's loss)
        refs = {p: e for p, e in ctx.references.items() if kind == FEATURES or method in rd.example_methods(p)[0]}
        names = [n for n in c.metrics if kind in get_entry(n).kinds and (refs or "references" not in
                                                                          get_entry(n).needs)]
        if not names:
            continue
        mctx = dataclasses.replace(ctx, references=refs)
        metrics = {n: build_metric(n, mctx, kind, c.metric_params.get(n)) for n in names}
        directions.update({n: score_direction(m) for n, m in metrics.items()})
        seed_everything(c.seed)
        result = evaluate(metrics, {method: explain_func}, enc, rd.x_np,
                          y_batch=rd.y.numpy() if kind == EXAMPLES and rd.y is not None else None,
                          agg_func=np.asarray,
                          explain_func_kwargs={"seed": c.seed} if kind == FEATURES else {}, return_as_df=False)
        for name, per_sample in result[method].items():
            mean, sem, n = _summarise(per_sample)
            rows.append({"pretext": pretext, "kind": kind, "method": method, "metric": name, "score": mean,
                         "sem": sem, "n": n})
        for name, metric in metrics.items():
            if get_entry(name).curve is not None:
                curves.setdefault(name, {})[method] = metric.curve()
    return {"scores": pd.DataFrame(rows), "directions": directions, "curves": curves}


#: the largest number of interactions a pair stage keeps per drawn pair (units of a x units of b); larger matrices
#: keep their row and column sums and their top entries only
MATRIX_LIMIT = 4096
#: the strongest interactions kept per drawn pair (the report lists them for text)
TOP_INTERACTIONS = 10


def pair_partners(rd: RunData, pretext: str) -> dict:
    """The pairs of the ``pretext`` encoder: ``{"a_index", "b_index"}`` (int64 arrays) and ``"b_split"``.

    ``pairs = "nearest"``: a is each explained input (test split), b its nearest neighbour among the run's
    training examples by the cosine of this encoder's latents, an input identical to a excluded (``b_split``
    ``"train"``). A file of index pairs: its rows, both indices into the test split (``b_split`` ``"test"``).
    """
    if rd.pair_index is not None:
        return {"a_index": rd.pair_index[:, 0].copy(), "b_index": rd.pair_index[:, 1].copy(), "b_split": "test"}
    enc = rd.encoder(pretext)
    xa, xt = enc.place(rd.x), rd.train_examples(enc)
    with torch.no_grad():
        za = torch.nn.functional.normalize(encode_chunks(enc, xa, 256).double(), dim=1)
        zt = torch.nn.functional.normalize(encode_chunks(enc, xt, 256).double(), dim=1)
        # an identical input is not a partner: exact distances (no matrix-product shortcut), zero only when equal
        same = torch.cdist(xa.reshape(len(xa), -1).double(), xt.reshape(len(xt), -1).double(),
                           compute_mode="donot_use_mm_for_euclid_dist") == 0
    cosine = (za @ zt.T).masked_fill(same, -torch.inf)
    if bool(torch.isinf(cosine).all(1).any()):
        raise InvalidInput("pairs = \"nearest\": an explained input equals every training example, so it has no "
                           "nearest neighbour; raise `n_train_examples` or give a file of index pairs.")
    return {"a_index": np.arange(len(xa), dtype=np.int64), "b_index": cosine.argmax(1).cpu().numpy().astype(np.int64),
            "b_split": "train"}


def pair_inputs_of(rd: RunData, pairs: dict) -> tuple:
    """``(a, b)``: the inputs of the pairs of :func:`pair_partners` (NumPy, the data's layout). The indices may be
    read-only arrays (a stage result from Ray's object store): they are copied, not wrapped."""
    a = rd.ds.x_test[torch.tensor(pairs["a_index"])]
    source = rd.ds.x_train if pairs["b_split"] == "train" else rd.ds.x_test
    return a.numpy(), source[torch.tensor(pairs["b_index"])].numpy()


def _stats(values) -> dict:
    """Mean, standard deviation, the half-width of the 95% confidence interval of the mean and n of the finite
    values."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": float("nan"), "std": float("nan"), "ci95": float("nan"), "n": 0}
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "ci95": 1.96 * std / np.sqrt(len(v)), "n": int(len(v))}


def _top_interactions(matrix: np.ndarray, k: int) -> pd.DataFrame:
    """The ``k`` largest |A_uv| of each pair's interaction matrix: pair, a_unit, b_unit, value."""
    rows = []
    for i, m in enumerate(matrix):
        flat = np.abs(m).ravel()
        for j in np.argsort(-flat, kind="stable")[:k]:
            u, v = np.unravel_index(j, m.shape)
            rows.append({"pair": i, "a_unit": int(u), "b_unit": int(v), "value": float(m[u, v])})
    return pd.DataFrame(rows, columns=["pair", "a_unit", "b_unit", "value"])


def pair_explanations(rd: RunData, pretext: str) -> dict:
    """Pair explanations of the ``pretext`` encoder (config ``pairs``): why do a and b have close representations?

    For each pair (:func:`pair_partners`): s(a, b) (config ``pair_similarity``); the attributions of a's features
    for s(·, b), b held fixed, by every pair explainer (:func:`lfeval.explain.pairs.explain_pairs`, side "a", the
    run's ``explainer_params``); the integrated-Jacobian interaction matrices of the first ``pair_maps`` pairs
    over the modality's masking units (:func:`lfeval.explain.interactions.interactions`, ``pair_steps``
    quadrature points) with their completeness errors; and the scores of the pair metrics (``pair_metrics``,
    built through the catalogue with ``MetricContext.partners``) on the stored attributions.

    Returns ``{"a_index", "b_index", "b_split", "similarity", "attributions": {method: array},
    "interactions": {"row_sums", "col_sums", "matrix" (or None), "error", "target", "top"}, "scores": DataFrame
    (pretext, method, metric, mean, std, ci95, n, direction), "directions", "curves": {metric: {method: Curve}}}``.
    """
    c = rd.config
    enc = rd.encoder(pretext)
    pairs = pair_partners(rd, pretext)
    a, b = pair_inputs_of(rd, pairs)
    s_ab = similarity(enc, a, b, kind=c.pair_similarity).numpy().astype(np.float32)
    attributions = {}
    for m in rd.bar(c.explainers_of_pairs, f"pairs {pretext}"):
        seed_everything(c.seed)
        options = {k: v for k, v in rd.explainer_options(m).items() if k != "seed"}
        attributions[m] = np.asarray(explain_pairs(enc, a, b, method=m, similarity=c.pair_similarity, side="a",
                                                   seed=c.seed, **options), dtype=np.float32)
    k = min(c.pair_maps, len(a))
    inter = {"row_sums": None, "col_sums": None, "matrix": None, "error": np.zeros(0, np.float32),
             "target": np.zeros(0, np.float32), "top": _top_interactions(np.zeros((0, 1, 1)), 0)}
    if k:
        matrix, error = interactions(enc, a[:k], b[:k], n_steps=c.pair_steps, similarity=c.pair_similarity,
                                     return_error=True)
        target = completeness_target(enc, a[:k], b[:k], similarity=c.pair_similarity).numpy()
        inter = {"row_sums": matrix.sum(2), "col_sums": matrix.sum(1),
                 "matrix": matrix if matrix[0].size <= MATRIX_LIMIT else None, "error": error,
                 "target": target.astype(np.float32), "top": _top_interactions(matrix, TOP_INTERACTIONS)}
    ctx = dataclasses.replace(rd.metric_context(pretext), partners=b,
                              explain_func=PairExplainFunc(b, similarity=c.pair_similarity))
    rows, directions, curves = [], {}, {}
    for method, attr in attributions.items():
        explain_func = PairExplainFunc(b, method=method, similarity=c.pair_similarity,
                                       **{k_: v for k_, v in rd.explainer_options(method).items() if k_ != "seed"})
        for name in c.metrics_of_pairs:
            metric = build_metric(name, dataclasses.replace(ctx, explain_func=explain_func), FEATURES,
                                  _pair_params(c, name))
            directions[name] = score_direction(metric)
            seed_everything(c.seed)
            with quick_checks(metric):
                per_sample = metric(model=enc, x_batch=a, y_batch=None, a_batch=attr, explain_func=explain_func,
                                    explain_func_kwargs={"seed": c.seed}, channel_first=True, softmax=False)
            rows.append({"pretext": pretext, "method": method, "metric": name, **_stats(per_sample),
                         "direction": directions[name]})
            if get_entry(name).curve is not None:
                curves.setdefault(name, {})[method] = metric.curve()
    relative = np.abs(inter["error"]) / np.maximum(np.abs(inter["target"]), 1e-12)
    for name, values in (("completeness_error", inter["error"]), ("relative_completeness_error", relative)):
        rows.append({"pretext": pretext, "method": "IntegratedJacobians", "metric": name, **_stats(values),
                     "direction": "lower"})
    scores = pd.DataFrame(rows, columns=["pretext", "method", "metric", "mean", "std", "ci95", "n", "direction"])
    return {**pairs, "similarity": s_ab, "attributions": attributions, "interactions": inter, "scores": scores,
            "directions": directions, "curves": curves}


def _parameters(entry) -> set:
    """The constructor parameters of a catalogue entry's metric class (none without one)."""
    if entry.target is None:
        return set()
    return set(inspect.signature(entry.target.__init__).parameters)


def _pair_params(c, name: str) -> dict:
    """The ``metric_params`` of pair metric ``name``, its ``similarity`` defaulting to the run's
    ``pair_similarity``."""
    params = dict(c.metric_params.get(name) or {})
    if "similarity" in _parameters(get_entry(name)):
        params.setdefault("similarity", c.pair_similarity)
    return params


def pretext_tables(rd: RunData) -> pd.DataFrame:
    """The §4.2 tables: correlation of explanations between pretext tasks, over ``pretext_seeds``. With
    encoders of the user's among them, the encoder-agreement table: every pair of the run's encoders, one run
    each (a user encoder has no training seeds), so "my SimCLR vs my autoencoder" is one row."""
    c = rd.config
    seeds = list(c.pretext_seeds) if not c.encoders else [c.seed]
    encoders = {p: [rd.encoder(p, s) for s in seeds] for p in rd.names}
    tables = []
    for kind, method in rd.bar([("features", c.pretext_feature_method), ("examples", c.pretext_example_method)],
                               "pretext tables"):
        seed_everything(c.seed)
        kw = {"x_train": rd.x_train} if kind == "examples" else rd.explainer_options(method)
        t = pretext_correlation_table(encoders, rd.x, kind=kind, method=method, seeds=seeds, **kw)
        tables.append(t.assign(kind=kind, method=method))
    return pd.concat(tables, ignore_index=True)[["kind", "method", "task_a", "task_b", "mean", "std", "runs"]]


def meta_evaluation(rd: RunData, metric: str):
    """MetaQuantus IAC/IEC/MC of one metric on the ``meta_pretext`` encoder (model and input tests).

    Feature metrics are meta-evaluated over ``meta_explainers`` (default: the run's explainers);
    example metrics (SimilarityRate, SimilarityContrast, the label-free rates) over the run's example methods,
    with the test labels passed only to the metrics that score with them. Pair metrics (config ``pairs``) are
    meta-evaluated over the pair explainers (``pair_explainers``, as the pair stage resolves them) on the first
    ``meta_samples`` pairs of the encoder (:func:`pair_partners`): the inputs a, each with its partner b bound to
    the metric (``MetricContext.partners``) and to the explain function (:class:`PairExplainFunc`, the run's
    ``pair_similarity``); the input tests perturb a and keep b, the model tests re-encode b with the perturbed
    encoder.

    Returns the table (metric, pretext, test, IAC_NR, IAC_AR, IEC_NR, IEC_AR, MC, fraction_kept); for a pair metric
    ``{"table": ..., "a_index", "b_index", "b_split"}``, the pairs it was computed on (:func:`meta_table`).
    """
    c = rd.config
    pretext = c.meta_pretext or rd.names[0]
    entry = get_entry(metric)
    enc = rd.encoder(pretext)
    ctx = rd.metric_context(pretext)
    x, labels, pairs = rd.x_np[:c.meta_samples], None, None
    if "pairs" in entry.needs:
        partners = pair_partners(rd, pretext)
        pairs = {"a_index": partners["a_index"][:c.meta_samples], "b_index": partners["b_index"][:c.meta_samples],
                 "b_split": partners["b_split"]}
        x, b = pair_inputs_of(rd, pairs)
        explain_func = PairExplainFunc(b, similarity=c.pair_similarity)
        estimator = build_metric(metric, dataclasses.replace(ctx, partners=b, explain_func=explain_func), FEATURES,
                                 _pair_params(c, metric))
        methods = {m: {**{k: v for k, v in rd.explainer_options(m).items() if k != "seed"}, "seed": c.seed}
                   for m in c.explainers_of_pairs}
    elif FEATURES in entry.kinds:
        estimator = build_metric(metric, ctx, FEATURES, c.metric_params.get(metric))
        methods = {m: {"seed": c.seed} for m in (c.meta_explainers or c.explainers)}
        explain_func = ctx.explain_func
    else:
        estimator = build_metric(metric, ctx, EXAMPLES, c.metric_params.get(metric))
        methods = {m: {} for m in rd.example_methods(pretext)[0]}
        labels = rd.y[:c.meta_samples].numpy() if "labels" in entry.needs else None
        explain_func = ctx.example_explain_func
    # the encoder's modality sets the input tests' noise (text: token hits); LabelFreeMetaEvaluation seeds np/torch
    suite = default_test_suite(seed=c.seed, modality=enc.modality)
    meta = LabelFreeMetaEvaluation(suite, methods, iterations=c.meta_iterations, nr_perturbations=c.meta_perturbations,
                                   explain_func=explain_func, seed=c.seed, display_progressbar=not c.quiet)
    meta(estimator, enc, x, score_labels=labels)
    table = meta.summary()
    kept = {test: np.mean([np.mean(t.fraction_kept) for n, t in suite.items() if n.startswith(test)])
            for test in table.index}
    table = table.assign(fraction_kept=pd.Series(kept)).rename_axis("test").reset_index()
    table = table.assign(metric=metric, pretext=pretext)[["metric", "pretext", "test", "IAC_NR", "IAC_AR", "IEC_NR",
                                                          "IEC_AR", "MC", "fraction_kept"]]
    return table if pairs is None else {"table": table, **pairs}


def meta_table(result) -> pd.DataFrame:
    """The ``meta.csv`` rows of a stored meta stage (:func:`meta_evaluation`): the table itself, or a pair
    metric's ``"table"``."""
    return result["table"] if isinstance(result, dict) else result
