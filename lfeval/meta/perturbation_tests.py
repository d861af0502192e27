"""Label-free MetaQuantus perturbation tests for encoders (Hedström et al. 2023, MetaQuantus §3).

MetaQuantus keeps a sample when the *predicted class* survives a minor perturbation (resilience)
or flips under a disruptive one (adversary). An encoder has no class: lfeval keeps a sample when
its **representation** stays close (resilience) or moves away (adversary). Closeness is, by default,
the *centred* cosine similarity between f(x) and the perturbed f'(x'), both taken relative to the mean
clean latent of the batch; the raw cosine, k-NN overlap against a reference bank of latents and any
callable ``close(z, z_perturbed) -> bool (N,)`` are the options. Centring matters when latents share a
large common offset: the time-series LSTM encoder's raw cosine stays near 0.99 under every perturbation
(benchmarks/README.md), so an adversary test would keep no sample.

Unlike MetaQuantus 0.0.5's InputPerturbationTest, the input test explains the *perturbed*
input (it explained the clean one, so attribution-only metrics could not react) and clips the
noisy input into the clean data's range (the upper clip was a no-op).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from metaquantus.perturbation_tests.base import PerturbationTestBase

from ..encoder import check_model
from ..errors import InvalidArgument
from ..modalities import Modality, get_modality
from ..validation import as_tensor, check_choice, check_inputs, check_number, check_positive_int

TYPES = ("Resilience", "Adversary")
KEEP = ("centred", "cosine", "knn")
#: below this many kept samples a Wilcoxon signed-rank p-value is not informative
MIN_KEPT = 10


class LatentPerturbationTest(PerturbationTestBase):
    """Shared logic: perturb, encode, decide which samples to keep, explain, score.

    Parameters
    ----------
    type : {"Resilience", "Adversary"}
    keep : {"centred", "cosine", "knn"} or callable
        How closeness of f(x) and the perturbed representation is judged.
    threshold : float, optional
        centred, cosine: similarity >= threshold counts as close (default 0.9);
        knn: overlap fraction of the k nearest bank neighbours >= threshold (default 0.5).
    bank : array (M, d), optional
        Reference latents for ``keep="knn"`` (e.g. f(x_train)).
    k : int
        Neighbours for ``keep="knn"``.
    seed : int
        Seed of the perturbations; :meth:`reset` restarts the stream (LabelFreeMetaEvaluation
        does at the start of each run, so the same seed gives the same numbers).
    """

    kind = "Latent"

    def __init__(self, type: str = "Resilience", keep: Union[str, Callable] = "cosine",
                 threshold: Optional[float] = None, bank=None, k: int = 10, seed: int = 0):
        super().__init__()
        self.type = check_choice(str(type).capitalize(), TYPES, "perturbation test type").lower()
        if not callable(keep):
            check_choice(keep, KEEP, "keep rule")
        self.keep = keep
        default = 0.5 if keep == "knn" else 0.9
        self.threshold = default if threshold is None else check_number(threshold, "threshold", minimum=-1.0)
        low = 0.0 if keep == "knn" else -1.0
        if not callable(keep) and not low <= self.threshold <= 1.0:
            raise InvalidArgument(f"`threshold` for keep={keep!r} must be in [{low}, 1], got {self.threshold}.")
        if keep == "knn" and bank is None:
            raise InvalidArgument("keep='knn' needs `bank`: reference latents (M, d), e.g. f(x_train).")
        self.bank = None if bank is None else check_inputs(bank, name="bank")
        if self.bank is not None and self.bank.ndim != 2:
            raise InvalidArgument(f"`bank` must be reference latents (M, d), got shape {tuple(self.bank.shape)}.")
        self.k, self.seed = check_positive_int(k, "k"), check_positive_int(seed, "seed", minimum=0)
        self.fraction_kept = []
        self.reset()

    def reset(self, seed: Optional[int] = None) -> None:
        """Restart the perturbation stream (and the kept-fraction record)."""
        self.seed = self.seed if seed is None else int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.fraction_kept = []

    @property
    def name(self) -> str:
        return f"{self.kind} {self.type.capitalize()} Test"

    def similarity(self, z: torch.Tensor, z_pert: torch.Tensor) -> torch.Tensor:
        """(N,) cosine of the perturbed and the clean latents, around the clean batch's mean for "centred"."""
        centre = z.mean(0, keepdim=True) if self.keep == "centred" and len(z) > 1 else 0.0
        return F.cosine_similarity(z - centre, z_pert - centre, dim=1)

    def close(self, z: torch.Tensor, z_pert: torch.Tensor) -> torch.Tensor:
        """Bool (N,): the perturbed representation stays close to the clean one."""
        if callable(self.keep):
            return torch.as_tensor(np.asarray(self.keep(z, z_pert))).bool().reshape(-1)
        if self.keep in ("centred", "cosine"):
            return self.similarity(z, z_pert) >= self.threshold
        bank = self.bank.to(z.device)
        k = min(self.k, len(bank))
        nn_a = torch.topk(-torch.cdist(z, bank), k, dim=1).indices
        nn_b = torch.topk(-torch.cdist(z_pert, bank), k, dim=1).indices
        overlap = (nn_a.unsqueeze(2) == nn_b.unsqueeze(1)).any(2).float().mean(1)
        return overlap >= self.threshold

    def perturb(self, model: torch.nn.Module, x: torch.Tensor):
        """Return (perturbed model, perturbed input) for one perturbation."""
        raise NotImplementedError

    def __call__(self, estimator, nr_perturbations: int, xai_methods: dict, model, x_batch, y_batch, a_batch,
                 s_batch, channel_first, explain_func, model_predict_kwargs, softmax, device):
        """MetaQuantus' test protocol: returns (scores {method: (K, N)}, closeness (K, N), keep (K, N) bool)."""
        net = check_model(model, x_batch)
        x = as_tensor(x_batch, "x_batch", device=net.device)
        n = len(x)
        scores = {m: np.zeros((nr_perturbations, n)) for m in xai_methods}
        closeness = np.zeros((nr_perturbations, n))
        keep = np.zeros((nr_perturbations, n), dtype=bool)
        with torch.no_grad():
            z = net(x)
        for p in range(nr_perturbations):
            net_p, x_p = self.perturb(net, x)
            with torch.no_grad():
                z_p = net_p(x_p)
            is_close = self.close(z, z_p).cpu().numpy()
            closeness[p] = self.similarity(z, z_p).cpu().numpy()
            keep[p] = is_close if self.type == "resilience" else ~is_close
            x_np = x_p.cpu().numpy()
            for method, kwargs in xai_methods.items():
                kwargs = {**kwargs, "method": method}
                a = explain_func(model=net_p, inputs=x_np, targets=y_batch, **kwargs)
                scores[method][p] = estimator(model=net_p, x_batch=x_np, y_batch=y_batch, a_batch=np.asarray(a),
                                              s_batch=s_batch, explain_func=explain_func, explain_func_kwargs=kwargs,
                                              model_predict_kwargs=model_predict_kwargs, channel_first=channel_first,
                                              softmax=False, device=device)
        kept = keep.sum(1)
        self.fraction_kept.append(float(keep.mean()))
        if kept.mean() < MIN_KEPT:
            warnings.warn(
                f"{self.name}: only {kept.mean():.1f} of {n} samples kept per perturbation on average; the Wilcoxon "
                f"test needs about {MIN_KEPT} to mean anything. Adjust `threshold` or the noise level.",
                stacklevel=2,
            )
        return scores, closeness, keep


class LatentModelPerturbationTest(LatentPerturbationTest):
    """Perturb the encoder's parameters: theta <- theta * eps (multiplicative) or theta + eps (additive),
    eps ~ N(mean, std), as MetaQuantus' ModelPerturbationTest; keep by representation closeness."""

    kind = "Model"

    def __init__(self, type: str = "Resilience", noise_type: str = "multiplicative", mean: float = 1.0,
                 std: float = 0.01, **kwargs):
        self.noise_type = check_choice(noise_type, ("multiplicative", "additive"), "noise_type")
        self.mean = check_number(mean, "mean", minimum=-np.inf)
        self.std = check_number(std, "std")
        super().__init__(type, **kwargs)

    def perturb(self, model, x):
        net = model.copy()  # the network (and the pretext model around it); checkpoints are shared
        with torch.no_grad():
            for p in net.module.parameters():
                eps = self.mean + self.std * torch.randn(p.shape, generator=self._gen).to(p.device)
                p.mul_(eps) if self.noise_type == "multiplicative" else p.add_(eps)
        return net.eval(), x


class LatentInputPerturbationTest(LatentPerturbationTest):
    """Perturb the inputs by the encoder's modality (:meth:`lfeval.modalities.Modality.perturb_input`):
    x + U(-noise, noise), clipped to the clean batch's [min, max], for continuous inputs; for text each token is hit
    with probability ``noise`` (resilience deletes function words, adversary swaps content tokens for random ones);
    explain and score the perturbed input; keep by representation closeness."""

    kind = "Input"

    def __init__(self, type: str = "Resilience", noise: float = 0.01, **kwargs):
        self.noise = check_number(noise, "noise", strict=True)
        super().__init__(type, **kwargs)

    def perturb(self, model, x):
        return model, model.modality.perturb_input(x, self.noise, self._gen, adversarial=self.type == "adversary")


def default_test_suite(seed: int = 0, bank=None, modality=None) -> dict:
    """The four tests with encoder-sized perturbations, named as MetaQuantus expects.

    Resilience: parameters x N(1, 0.01^2) / inputs + U(-0.01, 0.01), kept while the centred cosine >= 0.99.
    Adversary: parameters x N(1, 0.5^2) / inputs + U(-0.5, 0.5), kept once the centred cosine < 0.95.
    (On digits encoders the resilience perturbations keep it above 0.99 for nearly every sample; the
    adversary ones bring its median to about 0.93; on GunPoint's LSTM encoder to 0.71 and 0.98.)
    With ``bank`` (reference latents), closeness is k-NN overlap instead. ``modality`` (name or object) sets the
    input tests' noise levels and keep thresholds (:attr:`Modality.meta_noise`, ``meta_thresholds``; text: a
    token's chance of being hit, 0.3 and 0.5, kept at centred cosine >= 0.9 and < 0.8).
    """
    settings = get_modality(modality) if modality is not None else Modality
    noise, cos = settings.meta_noise, settings.meta_thresholds
    keep = {"keep": "knn", "bank": bank} if bank is not None else {"keep": "centred"}
    res = {**keep, "threshold": 0.8 if bank is not None else cos["resilience"]}
    adv = {**keep, "threshold": 0.5 if bank is not None else cos["adversary"]}
    return {
        "Model Resilience Test": LatentModelPerturbationTest("Resilience", std=0.01, seed=seed, **res),
        "Model Adversary Test": LatentModelPerturbationTest("Adversary", std=0.5, seed=seed + 1, **adv),
        "Input Resilience Test": LatentInputPerturbationTest("Resilience", noise=noise["resilience"], seed=seed + 2,
                                                             **res),
        "Input Adversary Test": LatentInputPerturbationTest("Adversary", noise=noise["adversary"], seed=seed + 3,
                                                            **adv),
    }
