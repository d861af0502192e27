"""One-sided pair attributions: why do ``a`` and ``b`` have close representations?

A similarity s(a, b) between two inputs' representations is explained one side at a time: with b held fixed,
s(·, b) is a scalar function of a, and any registered feature explainer attributes it. This is the paper's
auxiliary function (Crabbé & van der Schaar 2022, §2.1, Eq. 3) with the partner's latent f(b) in place of
f(a): g(a') = <f(a'), f(b)>. With b = a it is g_x itself, so ``explain_pairs(f, x, x)`` equals
``lfeval.explain(f, x)``.

Similarities (:data:`SIMILARITIES`):

- ``"dot"``: s(a, b) = <f(a), f(b)>;
- ``"cosine"``: ``s(a, b) = <f(a)/|f(a)|, f(b)/|f(b)|>``, attributed as the dot product of the *normalised*
  encoder ``f̂ = f/|f|`` (:func:`normalised_encoder`, an :class:`lfeval.Encoder` with the same modality, baseline,
  input shape, device and dtype), so every method, baseline and chunking rule of the dot product applies.

The partner's latent enters through :meth:`FeatureExplainer.attribute`'s ``reference`` (one latent per input)
and the attributed side integrates from its own baseline (the encoder's, or ``baseline``), never from the partner
or from itself. captum issue #873 got all-zero attributions for the tokens of one side of a sentence pair because
that side reached the model through ``additional_forward_args``, shared by captum's input and baseline passes: its
input and baseline coincided and IG integrated along an empty path (``tests/test_pairs.py`` checks both
constructions).

>>> import torch, lfeval
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3)).eval()
>>> a, b = torch.rand(4, 1, 6), torch.rand(4, 1, 6)
>>> attr = explain_pairs(net, a, b, method="InputXGradient")  # a * d<f(a), f(b)>/da = a * W^T f(b)
>>> W = net[1].weight.detach()
>>> bool(torch.allclose(torch.as_tensor(attr)[:, 0], a[:, 0] * (net(b) @ W), atol=1e-6))
True
>>> explain_pairs(net, a, b, method="Saliency", side="both")[1].shape
(4, 1, 6)
"""

from __future__ import annotations

import numpy as np
import torch

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput
from ..memory import encode_chunks
from ..modalities.text import NormalisedTokens, TokenModule
from ..precision import precise
from ..validation import check_choice, check_inputs, check_positive_int
from .base import QUANTUS_KEYS, get_explainer
from .cocoa import NormalisedModule

#: the similarities s(a, b) that pair explanations attribute
SIMILARITIES = ("dot", "cosine")
#: which input's features are attributed
SIDES = ("a", "b", "both")


def takes_reference(cls) -> bool:
    """Whether the explainer class ``cls`` attributes s(·, b) with a given reference latent f(b) (its
    :attr:`~lfeval.explain.base.FeatureExplainer.takes_reference` flag)."""
    return bool(cls.takes_reference)


def normalised_encoder(encoder):
    """The :class:`lfeval.Encoder` of ``x -> f(x)/|f(x)|`` (same modality, baseline, input shape, device and dtype);
    text encoders stay split at the input embeddings (:class:`lfeval.modalities.text.NormalisedTokens`)."""
    wrap = NormalisedTokens if isinstance(encoder.module, TokenModule) else NormalisedModule
    return encoder.replace(module=wrap(encoder.module))


def similarity_encoder(model, inputs=None, similarity: str = "dot"):
    """The encoder whose dot product is ``similarity``: f itself for ``"dot"``, ``f/|f|`` for ``"cosine"``."""
    kind = check_choice(similarity, SIMILARITIES, "similarity")
    encoder = check_model(model, inputs)
    return normalised_encoder(encoder) if kind == "cosine" else encoder


def pair_inputs(encoder, a, b, names: tuple = ("a", "b")) -> tuple:
    """``(a, b)`` validated as a batch of pairs on the encoder's device and in its data dtype, in the canonical
    layout; a single ``b`` (one sample) is paired with every ``a``. ``names``: what the caller calls them."""
    na, nb = names
    xa = encoder.canonical(check_inputs(a, encoder, name=na))
    xb = encoder.canonical(check_inputs(b, encoder, name=nb))
    if tuple(xa.shape[1:]) != tuple(xb.shape[1:]):
        raise InvalidInput(f"`{nb}` samples have shape {tuple(xb.shape[1:])} but `{na}` samples have "
                           f"{tuple(xa.shape[1:])}; pass inputs of the same shape (the inputs b, not their latents).")
    if len(xb) == 1 and len(xa) > 1:
        xb = xb.expand(len(xa), *xb.shape[1:])
    if len(xa) != len(xb):
        raise InvalidInput(f"`{na}` and `{nb}` must hold as many samples (one pair per row, in the same order, or "
                           f"a single `{nb}` shared by all): `{nb}` has {len(xb)} samples, `{na}` has {len(xa)}.")
    return xa, xb


def _latents(encoder, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return encode_chunks(encoder, x, batch_size)


@precise
def similarity(encoder, a, b, kind: str = "dot", batch_size: int = 256) -> torch.Tensor:
    """s(a_i, b_i) for each pair: (N,), on the CPU, in the latents' dtype (float64 for a float64 encoder).

    Parameters
    ----------
    encoder : nn.Module or lfeval.Encoder
    a, b : array or tensor ``(N, *input_shape)``
        The pairs (a single ``b`` is paired with every ``a``).
    kind : {"dot", "cosine"}
    batch_size : int
        Inputs per forward pass.
    """
    enc = similarity_encoder(encoder, a, kind)
    batch_size = check_positive_int(batch_size, "batch_size")
    xa, xb = pair_inputs(enc, a, b)
    za, zb = _latents(enc, xa, batch_size), _latents(enc, xb, batch_size)
    return (za * zb).sum(-1).cpu()


@precise
def explain_pairs(model, a, b, method: str = "IntegratedGradients", similarity: str = "dot", side: str = "a",
                  baseline=None, batch_size: int = 256, seed: int = 0, **options):
    """Attributions of a pair similarity s(a, b) to one side's features, the other side held fixed.

    Parameters
    ----------
    model : nn.Module or lfeval.Encoder
        The encoder f (eval mode).
    a, b : array or tensor ``(N, *input_shape)``
        The pairs; a single ``b`` is paired with every ``a``.
    method : str
        Any registered feature explainer (:func:`lfeval.explain.base.explainer_names`).
    similarity : {"dot", "cosine"}
        s(a, b) = <f(a), f(b)>, or the cosine of f(a) and f(b) (the dot product of the normalised encoder).
    side : {"a", "b", "both"}
        ``"a"``: attributions of a's features for s(·, b); ``"b"``: of b's for s(a, ·); ``"both"``: the tuple
        ``(attr_a, attr_b)``.
    baseline : number, tensor or callable, optional
        The method's reference input (default: the encoder's baseline), for either side.
    batch_size, seed, **options :
        As in :func:`lfeval.explain` (the method's options, e.g. ``n_steps``).

    Returns
    -------
    np.ndarray, float32, the shape of ``a`` (a tuple of two for ``side="both"``).
    """
    for key in QUANTUS_KEYS:
        options.pop(key, None)
    side = check_choice(side, SIDES, "side")
    cls = get_explainer(method)
    cls.check_options(options)
    if not takes_reference(cls):
        raise InvalidArgument(f"{cls.name} does not take a reference latent (COCOA sets its own corpus target, CEM "
                              "explains a decision), so it cannot explain a pair similarity; use a gradient or "
                              "perturbation method, e.g. method='IntegratedGradients'.")
    enc = similarity_encoder(model, a, similarity)
    batch_size = check_positive_int(batch_size, "batch_size")
    xa, xb = pair_inputs(enc, a, b)
    shape = tuple(np.shape(a))

    def one_side(x: torch.Tensor, partner: torch.Tensor) -> np.ndarray:
        z = _latents(enc, partner, batch_size)
        out = cls(enc).attribute(x, baseline=baseline, seed=seed, batch_size=batch_size, reference=z, **options)
        return out.reshape(shape).numpy()

    if side == "a":
        return one_side(xa, xb)
    if side == "b":
        return one_side(xb, xa)
    return one_side(xa, xb), one_side(xb, xa)


class PairExplainer:
    """Pair attributions, captum style: ``PairExplainer(model, method=..., similarity=...).attribute(a, b, ...)``.

    Parameters
    ----------
    model : nn.Module or lfeval.Encoder
    method : str
        A registered feature explainer.
    similarity : {"dot", "cosine"}
    **options :
        Default options of the method (``attribute``'s options override them).
    """

    def __init__(self, model, method: str = "IntegratedGradients", similarity: str = "dot", **options):
        self.model = model
        self.method = get_explainer(method).name or method
        self.similarity = check_choice(similarity, SIMILARITIES, "similarity")
        get_explainer(method).check_options(options)
        self.options = options

    def attribute(self, a, b, side: str = "a", baseline=None, batch_size: int = 256, seed: int = 0,
                  **options):
        """:func:`explain_pairs` with this explainer's model, method and similarity."""
        return explain_pairs(self.model, a, b, method=self.method, similarity=self.similarity, side=side,
                             baseline=baseline, batch_size=batch_size, seed=seed, **{**self.options, **options})

    def similarity_of(self, a, b, batch_size: int = 256) -> torch.Tensor:
        """s(a_i, b_i) (:func:`similarity`)."""
        return similarity(self.model, a, b, kind=self.similarity, batch_size=batch_size)

    def __repr__(self) -> str:
        return f"PairExplainer(method={self.method!r}, similarity={self.similarity!r})"


__all__ = ["SIMILARITIES", "SIDES", "similarity", "explain_pairs", "PairExplainer", "normalised_encoder",
           "similarity_encoder", "pair_inputs", "takes_reference"]
