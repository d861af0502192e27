"""Pretext tasks (paper §4.2) and the full model (encoder + decoder or head) trained on them.

Each task says how the input is corrupted, which head sits on the encoder, and its loss.
``PretextModel.example_loss`` is the deterministic per-example loss that loss-based example
importance (TracIn, influence functions) differentiates.

Every random draw (noise, masks, augmentations) comes from a seeded CPU ``torch.Generator`` and is then moved
to the input's device and dtype (:func:`draw`), so a seed gives the same corruptions, hence comparable weights,
on the CPU and on a GPU.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..draws import draw
from ..errors import InvalidArgument
from ..modalities import get_modality
from ..validation import check_number, check_positive_int
from .architectures import EncoderNet
from .task import PretextTask
from .vae import TCVAE, VAE_PRETEXTS, BetaVAE

PRETEXTS = ("reconstruction", "denoising", "inpainting", "classification", "contrastive")


class Reconstruction(PretextTask):
    """Autoencoding: reconstruct x from f(x)."""

    name = "reconstruction"


class Denoising(PretextTask):
    """Reconstruct x from f(x + eps), eps ~ N(0, sigma^2) (paper: sigma = 0.3).

    ``sigma`` is a finite number >= 0; sigma = 0 adds no noise (the task is then plain reconstruction) and is
    allowed as that limit.
    """

    name = "denoising"

    def __init__(self, sigma: float = 0.3):
        self.sigma = check_number(sigma, "sigma")

    def corrupt(self, x, generator):
        return x + self.sigma * draw(torch.randn, x.shape, generator, x)


class Inpainting(PretextTask):
    """Reconstruct x from f(m * x), m ~ Bernoulli(1 - p) per feature (paper: p = 0.2)."""

    name = "inpainting"

    def __init__(self, p: float = 0.2):
        """``p`` is the share of features dropped, in [0, 1): p = 0 drops none (plain reconstruction), and p = 1
        would drop every feature, leaving the encoder nothing to reconstruct from."""
        p = check_number(p, "p")
        if p >= 1:
            raise InvalidArgument(f"`p` (the inpainting drop rate) must be in [0, 1), got {p!r}: p = 1 drops every "
                                  "feature; use e.g. p=0.2 (the paper's).")
        self.p = p

    def corrupt(self, x, generator):
        u = torch.rand(x.shape, generator=generator, device="cpu")  # drawn on the CPU: the same mask on any device
        return x * (u >= self.p).to(x.device, x.dtype, non_blocking=True)


class Classification(PretextTask):
    """A linear head on f(x) trained with cross-entropy. Labels are used only to train this pretext."""

    name = "classification"
    needs_labels = True

    def build_head(self, encoder, n_classes):
        return nn.Linear(encoder.latent_dim, n_classes)

    def draws(self, model, x, generator):
        return None

    def loss_given(self, model, x, y, drawn):
        return F.cross_entropy(model(x), y, reduction="none")

    def example_loss(self, forward, x, y, extra=None):
        return F.cross_entropy(forward(x), y, reduction="none")


class Contrastive(PretextTask):
    """SimCLR: NT-Xent between two augmented views, through an MLP projection head (Chen et al. 2020)."""

    name = "contrastive"

    def __init__(self, modality="image", temperature: float = 0.5, proj_dim: int = 32):
        """``temperature`` > 0 (finite) divides the cosine similarities; ``proj_dim`` >= 1 is the projection's width."""
        self.augment = get_modality(modality).augment
        self.temperature = check_number(temperature, "temperature", strict=True)
        self.proj_dim = check_positive_int(proj_dim, "proj_dim")

    def build_head(self, encoder, n_classes):
        """SimCLR's g(h) = W2 ReLU(W1 h), applied to the whole latent. No ReLU in front of W1: the latent is the
        encoder's linear output, and a leading ReLU would hide each coordinate's negative half from the loss (a
        coordinate negative on every input got no gradient and died, 1-3 of 8 on digits)."""
        d = encoder.latent_dim
        return nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, self.proj_dim))

    def draws(self, model, x, generator):
        """The two augmented views, stacked: (2N, ...)."""
        return torch.cat([self.augment(x, generator), self.augment(x, generator)])

    def batch_key(self):
        return (type(self).loss_given, self.temperature)

    def loss_given(self, model, x, y, drawn):
        z = F.normalize(model(drawn), dim=1)
        n = x.shape[0]
        sim = z @ z.T / self.temperature
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=x.device), float("-inf"))
        pos = torch.arange(n, 3 * n, device=x.device) % (2 * n)  # view i's positive: i + n, and i - n
        per_view = F.cross_entropy(sim, pos, reduction="none")
        return 0.5 * (per_view[:n] + per_view[n:])

    def example_extra(self, x):
        """The fixed-seed augmented view x~ of each input (drawn on the CPU: the same view on any device)."""
        return self.augment(x, torch.Generator().manual_seed(0))

    def example_loss(self, forward, x, y, extra=None):
        """Alignment term: 1 - cos(g(f(x)), g(f(x~))) with the fixed-seed view x~ (deterministic)."""
        view = self.example_extra(x) if extra is None else extra
        return 1 - F.cosine_similarity(forward(x), forward(view), dim=1)


def make_task(pretext: str, modality, **kwargs) -> PretextTask:
    """Instantiate the task called ``pretext`` (validated by the caller)."""
    if pretext in VAE_PRETEXTS:
        cls = BetaVAE if pretext == "beta-vae" else TCVAE
    elif pretext == "contrastive":
        cls, kwargs = Contrastive, {"modality": modality, **kwargs}
    else:
        cls = {"reconstruction": Reconstruction, "denoising": Denoising, "inpainting": Inpainting,
               "classification": Classification}[pretext]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in kwargs:
        if key not in valid:
            raise InvalidArgument(f"The {pretext} pretext has no option {key!r}; its options: "
                                  f"{', '.join(v for v in valid if v != 'modality') or 'none'}.")
    return cls(**kwargs)


class PretextModel(nn.Module):
    """The full model: ``head(encoder(x))``; ``loss``/``example_loss`` delegate to the task."""

    def __init__(self, encoder: EncoderNet, task: PretextTask, n_classes: int = 0):
        super().__init__()
        self.encoder = encoder
        self.task = task
        self.head = task.build_head(encoder, n_classes)

    @property
    def pretext(self) -> str:
        return self.task.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def loss(self, x, y=None, generator=None) -> torch.Tensor:
        """Mean training loss of a batch (random corruption drawn from ``generator``)."""
        return self.task.loss(self, x, y, generator).mean()

    def example_loss(self, x, y=None) -> torch.Tensor:
        """Deterministic per-example loss (N,) on clean inputs, for TracIn and influence functions."""
        return self.task.example_loss(self, x, y, self.task.example_extra(x))
