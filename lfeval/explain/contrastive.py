"""Contrastive explanations: pertinent positives and negatives (Dhurandhar et al., NeurIPS 2018).

The Contrastive Explanation Method (CEM) explains the decision t0 on an input x0 by what is present
in x0 and by what is missing from it:

* a **pertinent positive** (PP) is a small, sparse part of x0 that is enough on its own to keep the
  decision t0, with margin κ: x_pp = lo + δ with 0 ≤ δ ≤ x0 − lo. A feature is either kept (up to
  its value in x0) or set to the absent value lo = ``clip[0]`` (0 for images in [0, 1]).
* a **pertinent negative** (PN) is a small, sparse addition δ ≥ 0 to x0, with x0 + δ inside the
  clip range, that changes the decision: something that must stay absent for t0 to hold.

Both solve the paper's elastic-net problem (Eq. 1 for the PN, Eq. 3 for the PP)

    min_δ  c·f_κ(x0, δ) + β‖δ‖₁ + ‖δ‖₂² + γ‖AE(x') − x'‖₂²,     x' = x0 + δ (PN) or x' = lo + δ (PP),

where the hinge losses are (Eq. 2 and Eq. 4)

    f_κ^neg = max([s(x0 + δ)]_t0 − max_{i≠t0} [s(x0 + δ)]_i, −κ)
    f_κ^pos = max(max_{i≠t0} [s(lo + δ)]_i − [s(lo + δ)]_t0, −κ).

The optimiser is FISTA (Eq. 5 and Eq. 6). Each iteration takes a gradient step on the smooth part at
the momentum point y, applies the shrinkage S_β and projects onto the feasible box, then sets
y ← Π(δ_new + k/(k+3)·(δ_new − δ_old)). The threshold is β, as in the paper and the authors' code
(textbook ISTA would use lr·β). The learning rate decays as lr·(1 − k/K)^½. A binary search
runs over c, as in the authors' code (IBM/Contrastive-Explanation-Method): start at ``c_init``,
multiply by 10 until the first success, then bisect. For each sample, the successful iterate with
the smallest elastic-net distance β‖δ‖₁ + ‖δ‖₂² is kept.

The scores s depend on the model:

* **classifier**: s = logits and t0 = argmax s.
* **encoder** (label-free): f has no classes. The decision is the representation's nearest
  prototype, p_1..p_K, with s_k(x) = −‖f(x) − p_k‖₂². The prototypes are k-means centroids of
  training latents (:func:`fit_prototypes`) or a given set. A PP keeps f(x_pp) nearest the same
  prototype by a margin κ in squared distance, and a PN moves f(x0 + δ) nearest another prototype.

A whole batch is optimised in one FISTA loop. c, its search bounds and the best solutions are (N,)
tensors updated through masks, and there is no loop over samples. CEM's discrete steps (success
checks, the best-iterate choice, the c search) can turn float rounding differences of 1e-7 into
different solutions. Model calls are therefore padded to a multiple of :data:`ROW_BLOCK` rows, so a
sample's float32 arithmetic does not depend on the batch size on CPU (MKL). Batched results then
equal one-sample-at-a-time runs (tests/test_contrastive.py).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput
from ..models.probe import latents
from ..precision import precise
from ..validation import (
    as_tensor,
    check_batch,
    check_choice,
    check_finite,
    check_module,
    check_positive_int,
    model_device,
)
from .base import QUANTUS_KEYS, FeatureExplainer, register_explainer

MODES = ("PP", "PN")
TASKS = ("auto", "classifier", "encoder")
METHODS = ("CEM-PP", "CEM-PN")
#: model calls are padded to a multiple of this many rows: CPU GEMM kernels (MKL here) round a last block
#: of fewer rows differently, so without padding a sample's float32 arithmetic would depend on the batch size
ROW_BLOCK = 4
_NO_BOUND = 1e10  # the authors' initial upper bound on c: "no success yet"


@dataclass
class ContrastiveResult:
    """Output of :meth:`ContrastiveExplainer.explain`. Tensors sit on the CPU, and the first axis is N.

    Attributes
    ----------
    explanation : torch.Tensor, input shape
        x_pp = lo + δ (PP) or x_pn = x0 + δ (PN). A sample with ``found=False`` gets δ = 0,
        that is, the blank input lo (PP) or x0 itself (PN).
    delta : torch.Tensor, input shape
        δ ≥ 0. It is 0 where ``found`` is False.
    found : torch.Tensor, bool (N,)
        Whether a successful solution was found: a PP that keeps the decision with margin κ, or a
        PN that changes it with margin κ.
    decision : torch.Tensor, int64 (N,)
        t0: the class (classifier) or nearest-prototype index (encoder) of the input.
    new_decision : torch.Tensor, int64 (N,)
        The decision on ``explanation``. It equals ``decision`` for a found PP and differs from it
        for a found PN.
    c : torch.Tensor, float64 (N,)
        The attack weight of the kept solution. Where nothing was found, it is the last c tried.
    distance : torch.Tensor, float32 (N,)
        β‖δ‖₁ + ‖δ‖₂² of the kept solution (inf where nothing was found).
    mode : str
        ``"PP"`` or ``"PN"``.
    """

    explanation: torch.Tensor
    delta: torch.Tensor
    found: torch.Tensor
    decision: torch.Tensor
    new_decision: torch.Tensor
    c: torch.Tensor
    distance: torch.Tensor
    mode: str


def fit_prototypes(encoder: nn.Module, x_train, n_prototypes: int = 10, seed: int = 0,
                   n_init: int = 10) -> torch.Tensor:
    """Prototypes for label-free decisions: k-means centroids (K, d) of the latents f(x_train).

    The fit is deterministic: scikit-learn's KMeans with ``random_state=seed``, on float64 latents.
    """
    from sklearn.cluster import KMeans

    check_module(encoder, "encoder")
    x = check_batch(as_tensor(x_train, "x_train"), "x_train")
    n_prototypes = check_positive_int(n_prototypes, "n_prototypes", minimum=2)
    if n_prototypes > len(x):
        raise InvalidArgument(
            f"`n_prototypes` must be an integer in [2, len(x_train)] = [2, {len(x)}], got {n_prototypes!r}."
        )
    z = latents(encoder, x).flatten(1).double().numpy()
    km = KMeans(n_clusters=n_prototypes, n_init=int(n_init), random_state=int(seed)).fit(z)
    return torch.as_tensor(km.cluster_centers_, dtype=torch.float32)


def _number(value, name: str, low: float = 0.0, strict: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"`{name}` must be a number, got {value!r}.") from None
    if not np.isfinite(v) or v < low or (strict and v == low):
        raise InvalidArgument(f"`{name}` must be {'>' if strict else '>='} {low:g}, got {value!r}.")
    return v


class ContrastiveExplainer:
    """Batched, label-free CEM: pertinent positives (PP) or negatives (PN) of a classifier or an encoder.

    Parameters
    ----------
    model : nn.Module
        A classifier ``(N, *input_shape)`` -> logits (N, n_classes), or an encoder -> latents (N, d).
        It must be in eval mode.
    autoencoder : nn.Module, optional
        The AE of the γ term, ‖AE(x') − x'‖₂² (paper Eq. 1 and Eq. 3), e.g.
        ``train_encoder(ds, pretext="reconstruction").pretext_model``. With None, the term is skipped.
    mode : {"PP", "PN"}
        Pertinent positive or pertinent negative.
    kappa : float
        Confidence margin κ ≥ 0 of the hinge losses (Eq. 2 and Eq. 4). It is in logit units for a
        classifier and in squared latent distance for an encoder.
    beta : float
        Weight β of the L1 term. It is also the shrinkage threshold S_β of the FISTA step (Eq. 5).
    gamma : float
        Weight γ of the autoencoder term.
    c_init, c_steps : float, int
        Initial weight c of the hinge loss, and the number of binary-search steps over c.
    iterations, lr : int, float
        FISTA iterations per c step, and the initial learning rate (polynomial decay, power ½).
        The paper uses 1000 iterations. The default 200 is enough for 8x8 digits.
    seed : int
        Seed of the only random step, the k-means fit of the prototypes.
    prototypes : array-like (K, d), optional
        Prototypes of the label-free decision (encoder task).
    n_prototypes : int
        K when the prototypes are fitted on ``x_train``.
    x_train : array-like ``(M, *input_shape)``, optional
        Training inputs whose latents k-means clusters into prototypes (:func:`fit_prototypes`).
    clip : (float, float)
        The data range (lo, hi). Inputs must lie in it, lo is the "absent" value, and every
        perturbed input stays inside it.
    task : {"auto", "classifier", "encoder"}
        How the decision is made. ``"auto"`` picks "encoder" if ``prototypes`` or ``x_train`` is
        given, and "classifier" otherwise. An encoder passed without them is treated as a classifier
        of its latent units.
    """

    def __init__(self, model: nn.Module, autoencoder: nn.Module | None = None, mode: str = "PP",
                 kappa: float = 0.1, beta: float = 0.1, gamma: float = 100.0, c_init: float = 10.0,
                 c_steps: int = 9, iterations: int = 200, lr: float = 1e-2, seed: int = 0, prototypes=None,
                 n_prototypes: int = 10, x_train=None, clip: tuple = (0.0, 1.0), task: str = "auto"):
        check_module(model)
        if autoencoder is not None:
            check_module(autoencoder, "autoencoder")
        self.model, self.autoencoder = model, autoencoder
        self.row_block = ROW_BLOCK
        self.mode = check_choice(mode, MODES, "CEM mode")
        self.task = check_choice(task, TASKS, "CEM task")
        self.kappa = _number(kappa, "kappa")
        self.beta = _number(beta, "beta")
        self.gamma = _number(gamma, "gamma")
        self.c_init = _number(c_init, "c_init", strict=True)
        self.lr = _number(lr, "lr", strict=True)
        self.c_steps = check_positive_int(c_steps, "c_steps")
        self.iterations = check_positive_int(iterations, "iterations")
        self.seed = int(seed)
        try:
            lo, hi = (float(v) for v in clip)
        except (TypeError, ValueError):
            raise InvalidArgument(f"`clip` must be a pair (lo, hi) of numbers, got {clip!r}.") from None
        if not lo < hi:
            raise InvalidArgument(f"`clip` must satisfy lo < hi, got {clip!r}.")
        self.clip = (lo, hi)
        self.device = model_device(model)
        if self.task == "auto":
            self.task = "encoder" if prototypes is not None or x_train is not None else "classifier"
        self.prototypes = None
        if self.task == "encoder":
            if prototypes is not None:
                p = check_finite(as_tensor(prototypes, "prototypes"), "prototypes")
                if p.ndim != 2 or len(p) < 2:
                    raise InvalidArgument(f"`prototypes` must have shape (K, d) with K >= 2, got {tuple(p.shape)}.")
            elif x_train is not None:
                p = fit_prototypes(model, x_train, n_prototypes, seed=self.seed)
            else:
                raise InvalidArgument('task="encoder" needs `prototypes` or `x_train` (to fit k-means prototypes).')
            self.prototypes = p.to(self.device)

    def _rows(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x)``, with the batch padded (repeating its last row) to a multiple of ``row_block`` rows."""
        pad = -len(x) % self.row_block
        if pad:
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
        return module(x)[: len(x) - pad]

    # -- decision scores ----------------------------------------------------------------------------------
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Decision scores s(x) (N, K): the logits, or −‖f(x) − p_k‖₂² for the prototypes p_k."""
        out = self._rows(self.model, x)
        if self.prototypes is None:
            if out.ndim != 2 or out.shape[1] < 2:
                raise InvalidArgument(
                    f"A classifier must return logits (N, n_classes >= 2), got shape {tuple(out.shape)}; for an "
                    "encoder pass `prototypes` or `x_train` (task='encoder')."
                )
            return out
        z = out.flatten(1)
        if z.shape[1] != self.prototypes.shape[1]:
            raise InvalidArgument(f"`prototypes` have dimension {self.prototypes.shape[1]} but the encoder's "
                                  f"latents have {z.shape[1]}.")
        return -(z[:, None, :] - self.prototypes[None]).pow(2).sum(-1)

    @staticmethod
    def _margin(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s_t0 − max_{i≠t0} s_i (N,)."""
        own = s.gather(1, t[:, None]).squeeze(1)
        other = s.scatter(1, t[:, None], float("-inf")).amax(1)
        return own - other

    def _success(self, margin: torch.Tensor) -> torch.Tensor:
        # the authors' `compare`: PP keeps t0 with score − κ, PN has another class above t0's score + κ
        return margin > self.kappa if self.mode == "PP" else margin < -self.kappa

    def _smooth_loss(self, delta: torch.Tensor, base: torch.Tensor, t: torch.Tensor, c: torch.Tensor):
        """Per-sample smooth part g(δ) = c·f_κ + ‖δ‖₂² + γ‖AE(x') − x'‖₂² (N,), x' = base + δ."""
        xp = base + delta
        m = self._margin(self.scores(xp), t)
        hinge = torch.clamp(-m if self.mode == "PP" else m, min=-self.kappa)
        loss = c * hinge + delta.pow(2).flatten(1).sum(1)
        if self.autoencoder is not None and self.gamma > 0:
            loss = loss + self.gamma * (self._rows(self.autoencoder, xp) - xp).pow(2).flatten(1).sum(1)
        return loss

    # -- main loop -------------------------------------------------------------------------------------
    def _inputs(self, inputs) -> torch.Tensor:
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        x = check_batch(as_tensor(inputs, "inputs", dtype=dtype), "inputs")
        lo, hi = self.clip
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < lo - 1e-6 or x_max > hi + 1e-6:
            raise InvalidInput(
                f"`inputs` must lie in the clip range [{lo:g}, {hi:g}] (CEM adds and removes features within it), "
                f"got values in [{x_min:.4g}, {x_max:.4g}]. Scale the data into [{lo:g}, {hi:g}] (lfeval.data.load "
                f"returns [0, 1]) or pass clip=(lo, hi) with the data's range and its absent value as lo."
            )
        return x.clamp(lo, hi).to(self.device)

    @precise
    def explain(self, inputs) -> ContrastiveResult:
        """Pertinent positives or negatives of a batch ``(N, *input_shape)``, all optimised together.

        FISTA (paper Eq. 5 and Eq. 6) runs ``iterations`` steps for each of ``c_steps`` values of c.
        Each step is δ ← Π(S_β(y − α_k∇g(y))) and y ← Π(δ + k/(k+3)(δ − δ_prev)), where Π is the
        projection onto the box [0, x0 − lo] (PP) or [0, hi − x0] (PN). c then moves per sample:
        after a success, it is bisected towards the lower bound. After a failure, it is multiplied
        by 10 (if nothing has succeeded yet) or bisected towards the upper bound.
        """
        x = self._inputs(inputs)
        lo, hi = self.clip
        n, view = len(x), (-1,) + (1,) * (x.ndim - 1)
        with torch.no_grad():
            t = self.scores(x).argmax(1)
        base = torch.full_like(x, lo) if self.mode == "PP" else x
        upper = x - lo if self.mode == "PP" else hi - x  # δ ∈ [0, upper]

        c = torch.full((n,), self.c_init, dtype=torch.float64, device=x.device)
        c_lo = torch.zeros_like(c)
        c_hi = torch.full_like(c, _NO_BOUND)
        best_dist = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        best_delta = torch.zeros_like(x)
        best_c = c.clone()
        k_iter = self.iterations
        for _ in range(self.c_steps):
            cw = c.to(x.dtype)
            delta = torch.zeros_like(x)
            slack = torch.zeros_like(x)
            step_ok = torch.zeros(n, dtype=torch.bool, device=x.device)
            for k in range(k_iter):
                lr_k = self.lr * (1.0 - k / k_iter) ** 0.5
                with torch.enable_grad():
                    y = slack.requires_grad_(True)
                    (grad,) = torch.autograd.grad(self._smooth_loss(y, base, t, cw).sum(), y)
                with torch.no_grad():
                    # S_β then Π: for δ ≥ 0 the shrinkage is max(z − β, 0), then the upper bound
                    new = torch.minimum((slack.detach() - lr_k * grad - self.beta).clamp_min(0.0), upper)
                    zt = (k + 1) / (k + 4)  # the authors' global_step / (global_step + 3), after the step
                    slack = torch.minimum((new + zt * (new - delta)).clamp_min(0.0), upper)
                    delta = new
                    ok = self._success(self._margin(self.scores(base + delta), t))
                    flat = delta.flatten(1)
                    dist = self.beta * flat.abs().sum(1) + flat.pow(2).sum(1)
                    better = ok & (dist < best_dist)
                    best_dist = torch.where(better, dist, best_dist)
                    best_delta = torch.where(better.view(view), delta, best_delta)
                    best_c = torch.where(better, c, best_c)
                    step_ok |= ok
            c_hi = torch.where(step_ok, torch.minimum(c_hi, c), c_hi)
            c_lo = torch.where(step_ok, c_lo, torch.maximum(c_lo, c))
            c = torch.where(c_hi < _NO_BOUND / 10, (c_lo + c_hi) / 2, c * 10)

        found = torch.isfinite(best_dist)
        with torch.no_grad():
            explanation = base + best_delta
            new_t = self.scores(explanation).argmax(1)
        return ContrastiveResult(
            explanation=explanation.cpu(), delta=best_delta.cpu(), found=found.cpu(), decision=t.cpu(),
            new_decision=new_t.cpu(), c=torch.where(found, best_c, c).cpu(), distance=best_dist.cpu(),
            mode=self.mode,
        )

    __call__ = explain


_EXPLAINER_KEYS = tuple(p for p in inspect.signature(ContrastiveExplainer.__init__).parameters
                        if p not in ("self", "model", "mode"))


class _CEM(FeatureExplainer):
    """CEM as a feature explainer: ``|δ|`` of the pertinent positive or negative (options:
    :class:`ContrastiveExplainer`'s, ``seed`` seeds its prototype fit). The decision is the model's
    own (argmax class, or nearest prototype for an encoder), so no g_x is attributed."""

    mode = "PP"
    option_names = _EXPLAINER_KEYS
    continuous_only = True
    takes_reference = False

    def attribute(self, inputs, baseline=None, seed: int = 0, batch_size: int = 256, reference=None, **options):
        self.check_options(options)
        if reference is not None:
            raise InvalidArgument(f"{self.name} explains the model's decision, not a latent unit; use a gradient "
                                  "or perturbation method for lfeval.explain_units.")
        if not check_model(self.encoder, inputs).modality.continuous:
            raise InvalidArgument(f"{self.name} adds and removes amounts of continuous features; it has no meaning on "
                                  "token ids (text). Use a gradient or perturbation method.")
        options.setdefault("seed", seed)
        result = ContrastiveExplainer(self.encoder, mode=self.mode, **options).explain(inputs)
        return result.delta.abs().to(torch.float32).reshape(np.shape(inputs))


@register_explainer("CEM-PP")
class CEMPP(_CEM):
    """CEM pertinent positive: ``|δ|`` (Dhurandhar et al. 2018)."""

    mode = "PP"


@register_explainer("CEM-PN")
class CEMPN(_CEM):
    """CEM pertinent negative: ``|δ|`` (Dhurandhar et al. 2018)."""

    mode = "PN"


#: method name -> CEM explainer class (the names are :data:`METHODS`)
_CEM_CLASSES = {cls.name: cls for cls in (CEMPP, CEMPN)}


def explain(model, inputs, targets=None, method: str = "CEM-PP", device=None, **kwargs) -> np.ndarray:
    """CEM attributions with Quantus' ``explain_func`` signature: ``|δ|`` of the PP or the PN.

    Parameters
    ----------
    model : nn.Module
        A classifier or an encoder, in eval mode. For an encoder, pass ``prototypes`` or ``x_train``.
    inputs : np.ndarray or torch.Tensor, ``(N, *input_shape)``
        Inputs in the clip range (default [0, 1]).
    targets : ignored
        The decision is the model's own: the argmax class, or the nearest prototype.
    method : {"CEM-PP", "CEM-PN"}
        Pertinent positive or pertinent negative.
    device : ignored
        Computation runs on the model's device.
    **kwargs
        :class:`ContrastiveExplainer` options: ``autoencoder``, ``kappa``, ``beta``, ``gamma``,
        ``c_init``, ``c_steps``, ``iterations``, ``lr``, ``seed``, ``prototypes``, ``n_prototypes``,
        ``x_train``, ``clip``, ``task``.

    Returns
    -------
    np.ndarray, float32, same shape as ``inputs``: ``|δ|``, which is 0 for samples without a solution.
    """
    method = check_choice(method, METHODS, "contrastive method")
    for key in QUANTUS_KEYS:
        kwargs.pop(key, None)
    seed = kwargs.pop("seed", 0)
    return _CEM_CLASSES[method](model).attribute(inputs, seed=seed, **kwargs).numpy()


