"""Label-free feature importance (Crabbé & van der Schaar 2022, §2.1, Eq. 3).

An encoder f: X -> R^d has no scalar output to attribute. The paper attributes the
auxiliary function g_x(x') = <f(x), f(x')>, with f(x) held fixed (detached): any attribution
method for scalar functions then explains the representation of x. lfeval passes f(x) to
captum as an additional forward argument, so captum expands it together with the inputs (IG's
internal batching, perturbation batches) and every sample is paired with its own f(x); the
paper's code repeats f(x) with ``.repeat`` and pairs samples with other samples' latents under
NoiseTunnel/GradientShap. GradientShap, SmoothGrad and Random are computed batch-invariantly
(see :mod:`lfeval.explain.stochastic`).
"""

from __future__ import annotations

import numpy as np
import torch
from captum import attr as captum_attr
from torch import nn

from .._validation import as_tensor, check_batch, check_choice, check_eval_mode, model_device
from ..errors import InvalidArgument
from .stochastic import gradient_shap, random_attribution, smooth_grad

#: captum methods that attribute g_x directly (class, takes baselines)
CAPTUM_METHODS = {
    "Saliency": (captum_attr.Saliency, False),
    "IntegratedGradients": (captum_attr.IntegratedGradients, True),
    "InputXGradient": (captum_attr.InputXGradient, False),
    "DeepLift": (captum_attr.DeepLift, True),
    "GuidedBackprop": (captum_attr.GuidedBackprop, False),
    "Deconvolution": (captum_attr.Deconvolution, False),
    "Occlusion": (captum_attr.Occlusion, True),
    "FeatureAblation": (captum_attr.FeatureAblation, True),
    "ShapleyValueSampling": (captum_attr.ShapleyValueSampling, True),
}
#: methods lfeval computes itself (batch-invariant randomness)
OWN_METHODS = ("GradientShap", "SmoothGrad", "Random")
CONTRASTIVE_METHODS = ("CEM-PP", "CEM-PN")
METHODS = tuple(CAPTUM_METHODS) + OWN_METHODS + CONTRASTIVE_METHODS
#: keyword arguments Quantus may pass to an explain_func that do not concern the method
_QUANTUS_KEYS = ("xai_lib", "softmax", "channel_first", "model_predict_kwargs")


class AuxiliaryFunction(nn.Module):
    """g(x', z) = <f(x'), z>: the paper's auxiliary function with the reference latent z = f(x) as input.

    Parameters
    ----------
    encoder : nn.Module
        f, mapping (N, *input_shape) to (N, d).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
        return (self.encoder(x) * z_ref).sum(-1)


def resolve_baseline(model: nn.Module, x: torch.Tensor, baseline=None) -> torch.Tensor:
    """The masking/reference input for ``x`` (N, ...): ``baseline`` if given (number, tensor or
    callable on the batch), else the data set's baseline stored on the encoder, else zeros."""
    if baseline is None:
        baseline = getattr(model, "baseline", None)
    if baseline is None:
        return torch.zeros_like(x)
    if callable(baseline) and not isinstance(baseline, torch.Tensor):
        out = baseline(x)
    else:
        out = as_tensor(baseline, "baseline", device=x.device)
    out = torch.as_tensor(out, dtype=x.dtype, device=x.device)
    try:
        return out.expand_as(x) if out.ndim <= x.ndim else None
    except RuntimeError:
        raise InvalidArgument(
            f"`baseline` of shape {tuple(out.shape)} does not broadcast to the inputs {tuple(x.shape)}; pass a "
            "number, one input's shape, a batch of the inputs' shape, or a callable on the batch."
        ) from None


def _default_window(shape: tuple) -> tuple:
    """Occlusion window: ~1/7 of each image side (1 pixel on 8x8 digits), one feature for tabular/series."""
    if len(shape) == 3:
        c, h, w = shape
        return (c, max(1, h // 7), max(1, w // 7))
    return tuple(1 for _ in shape)


def _attribute_chunk(aux: AuxiliaryFunction, x: torch.Tensor, z_ref: torch.Tensor, method: str, baseline,
                     seed: int, kwargs: dict) -> torch.Tensor:
    if method == "Random":
        return random_attribution(x, seed=seed)
    if method == "GradientShap":
        base = kwargs.pop("baselines", None)
        base = resolve_baseline(aux.encoder, x[:1], baseline)[:1] if base is None else as_tensor(base, "baselines",
                                                                                              device=x.device)
        return gradient_shap(aux, x, z_ref, base.reshape(-1, *x.shape[1:]), seed=seed, **kwargs)
    if method == "SmoothGrad":
        return smooth_grad(aux, x, z_ref, seed=seed, **kwargs)
    cls, uses_baseline = CAPTUM_METHODS[method]
    explainer = cls(aux)
    x = x.detach().requires_grad_(True)
    args = dict(additional_forward_args=(z_ref,), **kwargs)
    if uses_baseline:
        args["baselines"] = resolve_baseline(aux.encoder, x, baseline)
    if method == "Occlusion":
        args.setdefault("sliding_window_shapes", _default_window(tuple(x.shape[1:])))
    if method == "ShapleyValueSampling":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return explainer.attribute(x, **args)
    return explainer.attribute(x, **args)


def _prepare(model, inputs, name: str = "inputs"):
    if not isinstance(model, nn.Module):
        raise InvalidArgument(f"`model` must be a torch.nn.Module (the encoder), got {type(model).__name__}.")
    check_eval_mode(model)
    device = model_device(model)
    x = check_batch(as_tensor(inputs, name), name)
    return x, device


def _attribute(model, x, z_ref_fn, method, baseline, batch_size, seed, device, method_kwargs) -> torch.Tensor:
    aux = AuxiliaryFunction(model)
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        with torch.no_grad():
            z_ref = z_ref_fn(xb)
        a = _attribute_chunk(aux, xb, z_ref, method, baseline, seed, dict(method_kwargs))
        out.append(a.detach().to("cpu", torch.float32))
    return torch.cat(out)


def explain(model, inputs, targets=None, method: str = "IntegratedGradients", baseline=None, device=None,
            batch_size: int = 256, seed: int = 0, abs: bool = False, reduce_axes=None, **method_kwargs) -> np.ndarray:
    """Label-free feature attributions of an encoder, with Quantus' ``explain_func`` signature.

    Parameters
    ----------
    model : nn.Module
        The encoder f, in eval mode, (N, *input_shape) -> (N, d).
    inputs : np.ndarray or torch.Tensor, (N, *input_shape)
        Inputs to explain, e.g. (N, C, H, W), (N, 1, D) or (N, T, C).
    targets : ignored
        Encoders have no class to explain; Quantus passes ``y_batch`` here.
    method : str
        One of :data:`METHODS`: captum's Saliency, IntegratedGradients, InputXGradient, DeepLift,
        GuidedBackprop, Deconvolution, Occlusion, FeatureAblation, ShapleyValueSampling;
        lfeval's batch-invariant GradientShap and SmoothGrad; the Random control; CEM-PP/CEM-PN.
    baseline : number, tensor or callable, optional
        Reference input of baseline methods. Defaults to the data set's baseline carried by the
        encoder (``model.baseline``, set by :func:`lfeval.models.train_encoder`), else zeros.
    device : ignored
        Computation runs on the model's device (Quantus passes its own ``device``).
    batch_size : int
        Inputs per chunk.
    seed : int
        Seed of the stochastic methods (GradientShap, SmoothGrad, ShapleyValueSampling, Random).
    abs, reduce_axes :
        As in ``quantus.explain``: take |a|, and sum over the given axes (keeping them).
    **method_kwargs
        Passed to the method, e.g. ``n_steps`` for IntegratedGradients, ``n_samples``/``stdevs``
        for GradientShap, ``sliding_window_shapes`` for Occlusion.

    Returns
    -------
    np.ndarray, float32, same shape as ``inputs``.
    """
    for key in _QUANTUS_KEYS:
        method_kwargs.pop(key, None)
    check_choice(method, METHODS, "explanation method")
    if method in CONTRASTIVE_METHODS:
        from .contrastive import explain as explain_contrastive

        return explain_contrastive(model, inputs, targets, method=method, device=device, seed=seed, **method_kwargs)
    x, dev = _prepare(model, inputs)
    if int(batch_size) < 1:
        raise InvalidArgument(f"`batch_size` must be >= 1, got {batch_size}.")
    a = _attribute(model, x, model, method, baseline, int(batch_size), seed, dev, method_kwargs)
    if abs:
        a = a.abs()
    if reduce_axes is not None:
        a = a.sum(dim=tuple(reduce_axes), keepdim=True)
    return a.numpy()


def explain_units(model, inputs, method: str = "Saliency", baseline=None, batch_size: int = 256, seed: int = 0,
                  **method_kwargs) -> np.ndarray:
    """Attributions of each latent unit f_j(x) separately: shape (N, d, *input_shape).

    As the paper's ``attribute_individual_dim`` (§4.3): f_j(x') = <e_j, f(x')>, i.e. the
    auxiliary function with the one-hot reference e_j in place of f(x).
    """
    check_choice(method, tuple(CAPTUM_METHODS) + OWN_METHODS, "explanation method")
    x, dev = _prepare(model, inputs)
    with torch.no_grad():
        d = model(x[:1].to(dev)).shape[-1]
    units = []
    for j in range(d):  # a loop over latent units (d is small), each batched over samples
        def one_hot(xb, j=j):
            return torch.nn.functional.one_hot(torch.full((len(xb),), j, device=xb.device), d).to(xb.dtype)

        units.append(_attribute(model, x, one_hot, method, baseline, int(batch_size), seed, dev, method_kwargs))
    return torch.stack(units, dim=1).numpy()
