"""Batch-invariant stochastic attributions: GradientShap, SmoothGrad and the Random control.

captum draws the noise of GradientShap/NoiseTunnel for the whole batch at once, so a sample's
attribution depends on the batch it sits in. lfeval uses *common random numbers* instead: one
seeded draw of (noise, baseline index, alpha) per Monte-Carlo sample, shared by every input.
Each input's estimate is still an unbiased Monte-Carlo estimate, and an input gets exactly the
same attribution alone or in any batch. The Random control hashes each input's content with
seeded integer arithmetic (exact, vectorised), so it too is batch-invariant.
"""

from __future__ import annotations

import torch

from ..errors import InvalidArgument
from ..memory import rows_per_pass, run_in_chunks
from ..validation import as_tensor, check_number, check_positive_int
from .base import FeatureExplainer, register_explainer

_MOD = 2_147_483_647  # 2^31 - 1: products of two residues fit in int64


def _grad(forward, points: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    points = points.detach().requires_grad_(True)
    out = forward(points, z_ref)
    (grad,) = torch.autograd.grad(out.sum(), points)
    return grad


def _draws(shape: tuple, n_samples: int, stdevs: float, n_baselines: int, seed: int, device):
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((n_samples, *shape), generator=gen) * stdevs
    alphas = torch.rand(n_samples, generator=gen)
    idx = torch.randint(n_baselines, (n_samples,), generator=gen)
    return noise.to(device), alphas.to(device), idx.to(device)


def gradient_shap(forward, x: torch.Tensor, z_ref: torch.Tensor, baselines: torch.Tensor, n_samples: int = 50,
                  stdevs: float = 0.0, seed: int = 0, paired: bool = False) -> torch.Tensor:
    """GradientShap (Lundberg & Lee 2017; captum's definition) of ``forward(x', z_ref)``.

    phi(x) = mean_s (x + eps_s - b_s) * grad g(b_s + alpha_s (x + eps_s - b_s)),
    with b_s drawn from ``baselines`` ``(B, *shape)``, alpha_s ~ U(0, 1), eps_s ~ N(0, stdevs^2). With ``paired``,
    ``baselines`` ``(N, *shape)`` holds each input's own baseline (b_s = b for every s).
    """
    n, shape = x.shape[0], x.shape[1:]
    noise, alphas, idx = _draws(shape, n_samples, stdevs, 1 if paired else len(baselines), seed, x.device)
    alphas = alphas.view(1, n_samples, *([1] * len(shape)))
    noisy = x.unsqueeze(1) + noise.unsqueeze(0)  # (N, S, *shape)
    base = baselines.unsqueeze(1) if paired else baselines[idx].unsqueeze(0)  # (N or 1, S, *shape)
    points = (base + alphas * (noisy - base)).reshape(n * n_samples, *shape)
    grads = _grad(forward, points, z_ref.repeat_interleave(n_samples, 0)).view(n, n_samples, *shape)
    return ((noisy - base) * grads).mean(1)


def smooth_grad(forward, x: torch.Tensor, z_ref: torch.Tensor, n_samples: int = 50, stdevs: float = 0.15,
                seed: int = 0) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): mean_s grad g(x + eps_s), eps_s ~ N(0, stdevs^2)."""
    n, shape = x.shape[0], x.shape[1:]
    noise, _, _ = _draws(shape, n_samples, stdevs, 1, seed, x.device)
    points = (x.unsqueeze(1) + noise.unsqueeze(0)).reshape(n * n_samples, *shape)
    grads = _grad(forward, points, z_ref.repeat_interleave(n_samples, 0))
    return grads.view(n, n_samples, *shape).mean(1)


def random_attribution(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Uniform(-1, 1) attributions keyed on (seed, the input's content): the Random control.

    The input is quantised to 1/1024 steps and hashed with seeded modular integer arithmetic,
    so the result is exact, vectorised, reproducible and independent of the batch.
    """
    n = x.shape[0]
    flat = x.detach().reshape(n, -1).double()
    gen = torch.Generator().manual_seed(int(seed))
    d = flat.shape[1]
    weights = torch.randint(1, _MOD, (d,), generator=gen, dtype=torch.int64).to(x.device)
    mult = torch.randint(1, _MOD, (d,), generator=gen, dtype=torch.int64).to(x.device)
    shift = torch.randint(0, _MOD, (d,), generator=gen, dtype=torch.int64).to(x.device)
    q = (torch.round(flat * 1024).to(torch.int64) % _MOD + _MOD) % _MOD
    key = ((q * weights) % _MOD).sum(1) % _MOD  # (N,): a seeded hash of the content
    key = (key * 48271 + 11) % _MOD
    values = ((key[:, None] * mult[None, :]) % _MOD + shift[None, :]) % _MOD
    values = (values * 16807) % _MOD  # one more Lehmer step decorrelates neighbouring features
    return (values.double() / _MOD * 2 - 1).to(x.dtype).view_as(x)


def _in_groups(x: torch.Tensor, n_samples: int, compute) -> torch.Tensor:
    """``compute(rows)`` over groups of inputs whose n_samples points each fit one pass (large inputs: a few
    inputs at a time; halved on a GPU out-of-memory error). The draws are shared, so the result equals one call
    on every input."""
    step = rows_per_pass(x[0].numel(), len(x), per_row=n_samples, device=x.device)
    return run_in_chunks(compute, len(x), step)


@register_explainer("GradientShap")
class GradientShap(FeatureExplainer):
    """Batch-invariant GradientShap of g_x (:func:`gradient_shap`). ``baselines``: a distribution of
    reference inputs ``(B, *input_shape)``; default each input's own baseline (the encoder's)."""

    uses_baseline = True
    passes_per_input = 50

    def attribute_batch(self, x, z_ref, baseline, seed, n_samples: int = 50, stdevs: float = 0.0, baselines=None):
        n_samples = check_positive_int(n_samples, "n_samples")
        paired = baselines is None  # each input with its own baseline (a blurred image, a sentence's [PAD]s)
        base = baseline if paired else as_tensor(baselines, "baselines", device=x.device)
        try:
            base = base.reshape(-1, *x.shape[1:])
        except RuntimeError:
            raise InvalidArgument(f"`baselines` of shape {tuple(base.shape)} are not inputs of shape "
                                  f"{tuple(x.shape[1:])}.") from None
        stdevs = check_number(stdevs, "stdevs")
        return _in_groups(x, n_samples, lambda rows: gradient_shap(
            self.aux, x[rows], z_ref[rows], base[rows] if paired else base, n_samples=n_samples, stdevs=stdevs,
            seed=seed, paired=paired))


@register_explainer("SmoothGrad")
class SmoothGrad(FeatureExplainer):
    """Batch-invariant SmoothGrad of g_x (:func:`smooth_grad`)."""

    passes_per_input = 50

    def attribute_batch(self, x, z_ref, baseline, seed, n_samples: int = 50, stdevs: float = 0.15):
        n_samples, stdevs = check_positive_int(n_samples, "n_samples"), check_number(stdevs, "stdevs")
        return _in_groups(x, n_samples, lambda rows: smooth_grad(self.aux, x[rows], z_ref[rows], n_samples=n_samples,
                                                                 stdevs=stdevs, seed=seed))


@register_explainer("Random")
class Random(FeatureExplainer):
    """The Random control: U(-1, 1) per feature, keyed on the seed and the input's content only."""

    #: a control, not an explainer: a metric it ties or wins is left out of a run's mean rank
    #: (:func:`lfeval.report.ranking.control_wins`); a user's method may set it too
    control = True

    def attribute_batch(self, x, z_ref, baseline, seed):
        return random_attribution(x, seed=seed)
