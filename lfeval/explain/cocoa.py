"""COCOA, contrastive corpus attribution (Lin et al., ICLR 2023), for any registered feature method.

COCOA is a *target*, not an attribution algorithm: it attributes the contrastive corpus similarity
g(x') = <f(x')/||f(x')||, t> (t = corpus mean - foil mean of unit latents, :mod:`lfeval.explain.corpus`)
with any attribution method. lfeval does this through the explainer base: the inner method runs on the
encoder followed by a normalisation, with ``reference`` = the explicand's corpus target t in place of f(x), so
its auxiliary function <f̂(x'), t> is exactly COCOA's g. The paper pairs it with RISE, Integrated Gradients,
GradientShap and Kernel SHAP; here ``method`` is any name of :func:`lfeval.explain.base.explainer_names`
(RELAX is lfeval's RISE-style masking method).

>>> import torch, lfeval
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
>>> pool = torch.rand(40, 1, 4, 4)
>>> a = lfeval.explain(net, torch.rand(2, 1, 4, 4), method="COCOA", x_train=pool, n_clusters=3,
...                    inner="Saliency")
>>> a.shape
(2, 1, 4, 4)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..encoder import check_model
from ..errors import InvalidArgument
from ..modalities.text import NormalisedTokens, TokenModule
from .base import FeatureExplainer, get_explainer, register_explainer
from .corpus import CORPUS_OPTIONS, Corpus

DEFAULT_INNER = "IntegratedGradients"


class NormalisedModule(nn.Module):
    """x -> f(x) / ||f(x)||: the encoder of COCOA's cosine similarities."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return F.normalize(self.module(x), dim=-1)


@register_explainer("COCOA")
class COCOA(FeatureExplainer):
    """Contrastive corpus attribution: ``inner`` (default IntegratedGradients) applied to COCOA's g.

    Options: ``inner`` (the attribution method) and its own options; the corpus options of
    :class:`lfeval.explain.corpus.Corpus` (``x_train`` is required; ``by``, ``y_train``, ``label``,
    ``corpus_index``, ``foil_index``, ``n_clusters``, ``corpus_size``, ``foil_size``, ``k``, ``corpus_seed``
    (default: ``seed``), ``foil_seed``). ``lfeval run`` fills ``x_train`` and ``y_train`` with the run's
    training examples (``training_data``).
    """

    training_data = ("x_train", "y_train")
    takes_reference = False  # its target is the corpus similarity, not a given latent

    @classmethod
    def options(cls) -> tuple:
        return ("inner",) + CORPUS_OPTIONS

    @classmethod
    def check_options(cls, options: dict) -> None:
        inner = options.get("inner", DEFAULT_INNER)
        if inner == cls.name:
            raise InvalidArgument("COCOA's `inner` method cannot be COCOA itself; name an attribution method, e.g. "
                                  "'IntegratedGradients'.")
        get_explainer(inner).check_options({k: v for k, v in options.items() if k not in cls.options()})

    def attribute(self, inputs, baseline=None, seed: int = 0, batch_size: int = 256, reference=None,
                  inner: str = DEFAULT_INNER, **options) -> torch.Tensor:
        self.check_options({"inner": inner, **options})
        if reference is not None:
            raise InvalidArgument("COCOA sets the reference itself (the corpus target); use another method for "
                                  "lfeval.explain_units.")
        self.encoder = encoder = check_model(self.encoder, inputs)
        corpus = Corpus.from_options(options, corpus_seed=int(seed))
        fitted = corpus.fit(encoder)
        wrap = NormalisedTokens if isinstance(encoder.module, TokenModule) else NormalisedModule  # text: by halves
        normalised = encoder.replace(module=wrap(encoder.module))
        explainer = get_explainer(inner)(normalised)
        return explainer.attribute(inputs, baseline=baseline, seed=seed, batch_size=batch_size,
                                   reference=fitted.target, **options)


__all__ = ["COCOA", "NormalisedModule", "DEFAULT_INNER"]
