"""Label-free feature importance (Crabbé & van der Schaar 2022, §2.1, Eq. 3) with Quantus'
``explain_func`` signature: :func:`explain` and, per latent unit, :func:`explain_units`.

The methods are :class:`~lfeval.explain.base.FeatureExplainer` classes in a registry: captum's
(:mod:`lfeval.explain.captum_methods`), lfeval's batch-invariant GradientShap, SmoothGrad and the
Random control (:mod:`lfeval.explain.stochastic`), CEM's pertinent positives and negatives
(:mod:`lfeval.explain.contrastive`), and the peers' RELAX (:mod:`lfeval.explain.relax`) and COCOA
(:mod:`lfeval.explain.cocoa`).

>>> import torch, lfeval
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
>>> x = torch.rand(5, 1, 4)
>>> a = lfeval.explain(net, x, method="InputXGradient")       # no target: g_x needs none
>>> a.shape, a.dtype
((5, 1, 4), dtype('float32'))
>>> W = net[1].weight.detach()                                  # g_x(x') = <Wx + b, Wx' + b>: grad = W^T f(x)
>>> bool(torch.allclose(torch.as_tensor(a), x * (net(x) @ W).unsqueeze(1), atol=1e-6))
True
"""

from __future__ import annotations

import numpy as np
import torch

from ..encoder import check_model
from ..validation import check_inputs
from . import contrastive
from .base import EXPLAINERS, QUANTUS_KEYS, AuxiliaryFunction, get_explainer
from .captum_methods import CAPTUM_METHODS

#: methods lfeval computes itself (batch-invariant randomness)
OWN_METHODS = ("GradientShap", "SmoothGrad", "Random")
CONTRASTIVE_METHODS = contrastive.METHODS

#: names of the registered methods: a live view of :data:`EXPLAINERS` (it grows with each registration)
METHODS = EXPLAINERS.keys()


def explain(model, inputs, targets=None, method: str = "IntegratedGradients", baseline=None, device=None,
            batch_size: int = 256, seed: int = 0, abs: bool = False, reduce_axes=None, **method_kwargs) -> np.ndarray:
    """Label-free feature attributions of an encoder, with Quantus' ``explain_func`` signature.

    Parameters
    ----------
    model : nn.Module or lfeval.Encoder
        The encoder f, in eval mode, ``(N, *input_shape) -> (N, d)``.
    inputs : np.ndarray or torch.Tensor, ``(N, *input_shape)``
        Inputs to explain, e.g. (N, C, H, W), (N, 1, D) or (N, T, C).
    targets : ignored
        Encoders have no class to explain; Quantus passes ``y_batch`` here.
    method : str
        A registered explainer (:func:`lfeval.explain.base.explainer_names`): captum's Saliency,
        IntegratedGradients, InputXGradient, DeepLift, GuidedBackprop, Deconvolution, Occlusion,
        FeatureAblation, ShapleyValueSampling; lfeval's batch-invariant GradientShap and SmoothGrad;
        the Random control; CEM-PP/CEM-PN; RELAX; COCOA (any of these on a corpus target); and any method
        registered with
        :func:`lfeval.explain.base.register_explainer`.
    baseline : number, tensor or callable, optional
        Reference input of baseline methods. Default: the encoder's baseline (the data set's, for
        an :class:`lfeval.Encoder` from :func:`lfeval.models.train_encoder`; zeros for a plain module).
    device : ignored
        Computation runs on the model's device (Quantus passes its own ``device``).
    batch_size : int
        Inputs per chunk.
    seed : int
        Seed of the stochastic methods (GradientShap, SmoothGrad, ShapleyValueSampling, Random).
    abs, reduce_axes :
        As in ``quantus.explain``: take ``|a|``, and sum over the given axes (keeping them).
    **method_kwargs
        The method's options (:meth:`FeatureExplainer.options`), e.g. ``n_steps`` for
        IntegratedGradients, ``n_samples``/``stdevs`` for GradientShap.

    Returns
    -------
    np.ndarray, float32, same shape as ``inputs``.
    """
    for key in QUANTUS_KEYS:
        method_kwargs.pop(key, None)
    cls = get_explainer(method)
    a = cls(check_model(model, inputs)).attribute(inputs, baseline=baseline, seed=seed, batch_size=batch_size,
                                                  **method_kwargs)
    if abs:
        a = a.abs()
    if reduce_axes is not None:
        a = a.sum(dim=tuple(reduce_axes), keepdim=True)
    return a.numpy()


def explain_units(model, inputs, method: str = "Saliency", baseline=None, batch_size: int = 256, seed: int = 0,
                  **method_kwargs) -> np.ndarray:
    """Attributions of each latent unit f_j(x) separately: shape ``(N, d, *input_shape)``.

    As the paper's ``attribute_individual_dim`` (§4.3): f_j(x') = <e_j, f(x')>, i.e. the
    auxiliary function with the one-hot reference e_j in place of f(x).
    """
    encoder = check_model(model, inputs)
    x = encoder.canonical(check_inputs(inputs, encoder))
    explainer = get_explainer(method)(encoder)
    with torch.no_grad():
        d = encoder(x[:1]).shape[-1]
    units = []
    for j in range(d):  # a loop over latent units (d is small), each batched over samples
        def one_hot(xb, j=j):
            return torch.nn.functional.one_hot(torch.full((len(xb),), j, device=xb.device), d).to(xb.dtype)

        units.append(explainer.attribute(inputs, baseline=baseline, seed=seed, batch_size=batch_size,
                                         reference=one_hot, **method_kwargs))
    return torch.stack(units, dim=1).numpy()


__all__ = ["explain", "explain_units", "AuxiliaryFunction", "CAPTUM_METHODS", "OWN_METHODS", "CONTRASTIVE_METHODS",
           "EXPLAINERS", "METHODS"]
