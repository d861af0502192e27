"""Disentangled VAEs for the paper's §4.3: β-VAE (Higgins et al. 2017) and β-TC-VAE (Chen et al. 2018).

Both are pretext tasks of :func:`lfeval.models.train_encoder` (``pretext="beta-vae"`` /
``"tc-vae"``, option ``beta``). The explained encoder is the posterior mean x -> mu(x) in R^d; the
full model (``enc.pretext_model``) decodes z ~ q(z|x) during training and mu(x) at evaluation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..draws import draw
from ..validation import check_number, check_positive_int
from .architectures import EncoderNet
from .task import PretextTask

VAE_PRETEXTS = ("beta-vae", "tc-vae")


class VAEEncoder(EncoderNet):
    """Gaussian posterior q(z|x) = N(mu(x), diag(exp(logvar(x)))); ``forward`` returns mu(x)."""

    def __init__(self, base: EncoderNet):
        super().__init__(base.input_shape, base.latent_dim // 2)
        self.base = base

    def __getattr__(self, name):  # architecture details (sizes, channels, ...) come from the base network
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base"), name)

    def mirrored(self) -> EncoderNet:
        return self.base

    def distribution(self, x: torch.Tensor):
        """(mu, logvar), each (N, d)."""
        out = self.base(x)
        return out[:, : self.latent_dim], out[:, self.latent_dim:].clamp(-10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.distribution(x)[0]


def _bce(out, x) -> torch.Tensor:
    """Bernoulli log-likelihood term: summed BCE per example (inputs in [0, 1], sigmoid decoder)."""
    return F.binary_cross_entropy(out, x, reduction="none").flatten(1).sum(1)


def _log_normal(z, mu, logvar) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp())


class BetaVAE(PretextTask):
    """β-VAE: E_q[-log p(x|z)] + β KL(q(z|x) || N(0, I)) per example (Higgins et al. 2017, Eq. 4)."""

    name = "beta-vae"

    def __init__(self, beta: float = 1.0):
        """``beta`` >= 0 (finite) weighs the KL term; beta = 0 is a plain (stochastic) autoencoder."""
        self.beta = check_number(beta, "beta")

    @staticmethod
    def kl(mu, logvar) -> torch.Tensor:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)

    def draws(self, model, x, generator):
        """(eps, β): eps ~ N(0, I) of the reparametrisation, (N, d), drawn on the CPU (the same z on any device),
        and β per example, (N,), so that VAEs with several β share a batched ensemble's step."""
        return (draw(torch.randn, (len(x), model.encoder.latent_dim), generator, x),
                torch.full((len(x),), self.beta, dtype=x.dtype, device=x.device))

    def sample(self, model, x, eps):
        mu, logvar = model.encoder.distribution(x)
        return mu, logvar, mu + (0.5 * logvar).exp() * eps

    def loss_given(self, model, x, y, drawn):
        eps, beta = drawn
        mu, logvar, z = self.sample(model, x, eps)
        return _bce(model.head(z), x) + beta * self.kl(mu, logvar)

    def example_loss(self, forward, x, y, extra=None):
        """Deterministic: reconstruction of the posterior mean (the KL term needs the full model)."""
        return _bce(forward(x), x)


class TCVAE(BetaVAE):
    """β-TC-VAE: recon + MI + β TC + dimension-wise KL, with minibatch-weighted sampling
    (Chen et al. 2018, Eq. 2 and §3.1; dataset size N estimated by the batch's share ``n_data``)."""

    name = "tc-vae"

    def __init__(self, beta: float = 1.0, n_data: int = 1000):
        super().__init__(beta)
        self.n_data = check_positive_int(n_data, "n_data")

    def batch_key(self):
        return (type(self).loss_given, self.n_data)

    def loss_given(self, model, x, y, drawn):
        eps, beta = drawn
        mu, logvar, z = self.sample(model, x, eps)
        b = len(x)
        log_qz_x = _log_normal(z, mu, logvar).sum(1)
        pair = _log_normal(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (b, b, d)
        norm = math.log(b * self.n_data)
        log_qz = torch.logsumexp(pair.sum(2), dim=1) - norm
        log_prod_qzi = (torch.logsumexp(pair, dim=1) - norm).sum(1)
        log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
        mi, tc, dim_kl = log_qz_x - log_qz, log_qz - log_prod_qzi, log_prod_qzi - log_pz
        return _bce(model.head(z), x) + mi + beta * tc + dim_kl
