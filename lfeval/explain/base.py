"""The base class of label-free feature explainers and their registry (captum's pattern: one class per
method on a shared base, constructed on the model, called with ``attribute``).

An encoder f: X -> R^d has no scalar output to attribute. Crabbé & van der Schaar (2022, §2.1, Eq. 3)
attribute the auxiliary function g_x(x') = <f(x), f(x')> with f(x) held fixed: any attribution
method for scalar functions then explains the representation of x. :class:`FeatureExplainer` does
the shared work (validation, the encoder's layout and device, chunking, the reference latent
z = f(x) computed without gradients, the baseline) and subclasses implement :meth:`attribute_batch`.

A user adds a method from their own file:

>>> import torch
>>> @register_explainer("Constant")
... class Constant(FeatureExplainer):
...     '''Every feature gets the same importance (a control).'''
...     def attribute_batch(self, x, z_ref, baseline, seed):
...         return torch.ones_like(x)
>>> import lfeval
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2)).eval()
>>> float(lfeval.explain(net, torch.rand(3, 1, 6), method="Constant").sum())
18.0
>>> _ = EXPLAINERS.pop("Constant")
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .. import threads
from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput
from ..memory import rows_per_pass, run_in_chunks
from ..precision import precise
from ..registry import Registry, closest
from ..validation import check_inputs, check_positive_int

#: keyword arguments Quantus (and MetaQuantus) may pass to an explain_func that do not concern the method
QUANTUS_KEYS = ("xai_lib", "softmax", "channel_first", "model_predict_kwargs", "device")


def _explainer_class(name: str, cls):
    """The registry's check: ``cls`` must be a :class:`FeatureExplainer` subclass; it is given its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, FeatureExplainer)):
        raise InvalidArgument(f"register_explainer({name!r}) needs a FeatureExplainer subclass, got {cls!r}.")
    cls.name = name
    return cls


#: method name -> FeatureExplainer subclass; :mod:`lfeval.explain` imports every built-in method's module, so
#: importing any ``lfeval.explain.<module>`` registers them all (a Ray worker included)
EXPLAINERS = Registry("explanation method", check=_explainer_class)


def register_explainer(name: str) -> Callable:
    """Class decorator: make a :class:`FeatureExplainer` subclass available as ``method=name`` in
    :func:`lfeval.explain`, ``quantus.evaluate`` runs and ``lfeval run``'s ``explainers``."""
    return EXPLAINERS.register(name)


def get_explainer(name: str) -> type:
    """The registered explainer class of ``name`` (an unknown name raises :class:`~lfeval.errors.UnknownName`
    naming the closest one)."""
    return EXPLAINERS.get(name)


def explainer_names() -> tuple:
    """Names of every registered feature explainer, the built-in ones first."""
    return EXPLAINERS.names()


class AuxiliaryFunction(nn.Module):
    """g(x', z) = <f(x'), z>: the paper's auxiliary function with the reference latent z = f(x) as input.

    Passing z as an input (captum's ``additional_forward_args``) lets captum expand it with the inputs
    (IG's internal batching, perturbation batches), so every sample is paired with its own f(x); the
    paper's code repeats f(x) with ``.repeat`` and pairs samples with other samples' latents under
    NoiseTunnel/GradientShap.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
        return (self.encoder(x) * z_ref).sum(-1)


class FeatureExplainer:
    """Base class: label-free feature attributions of an encoder.

    Parameters
    ----------
    encoder : nn.Module or lfeval.Encoder
        f, in eval mode; a plain module is wrapped by :func:`lfeval.as_encoder` on first use.

    Notes
    -----
    Subclasses set ``uses_baseline`` (the method takes a reference input) and implement
    :meth:`attribute_batch`; :meth:`options` lists the keyword options it accepts.
    """

    name = ""
    #: the method replaces features with a baseline / integrates from one
    uses_baseline = False
    #: option names accepted by attribute_batch (None: read from its signature)
    option_names: Optional[tuple] = None
    #: options that ``lfeval run`` fills with its training examples: "x_train" (inputs), "y_train" (their labels)
    training_data: tuple = ()
    #: the method only replaces whole masking units with the baseline and never differentiates (RELAX): on
    #: discrete inputs (text) it masks tokens of the input itself instead of working on the input embeddings
    unit_masking = False
    #: the method needs real-valued inputs (CEM adds and removes amounts of features); refused on token ids
    continuous_only = False
    #: the method attributes g(x', z) for a given reference latent z (``reference=``): a pair's s(a, b) with
    #: z = f(b) (:mod:`lfeval.explain.pairs`); False for methods that set their own target (COCOA, CEM)
    takes_reference = True

    def __init__(self, encoder: nn.Module):
        self.encoder = encoder
        self.space = None

    # ------------------------------------------------------------------ options
    @classmethod
    def options(cls) -> tuple:
        """Keyword options of the method (besides ``baseline``, ``seed`` and ``batch_size``)."""
        if cls.option_names is not None:
            return tuple(cls.option_names)
        params = inspect.signature(cls.attribute_batch).parameters
        return tuple(p for p in params if p not in ("self", "x", "z_ref", "baseline", "seed"))

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Raise :class:`InvalidArgument` naming an option the method does not take (and the valid ones)."""
        valid = cls.options()
        for key in options:
            if key not in valid:
                raise InvalidArgument(f"{cls.name or cls.__name__} has no option {key!r}.{closest(key, valid)} Its "
                                      f"options: {', '.join(valid) or 'none'}.")

    # ------------------------------------------------------------------ attribution
    @precise
    def attribute(self, inputs, baseline=None, seed: int = 0, batch_size: int = 256,
                  reference: Optional[Callable] = None, **options) -> torch.Tensor:
        """Attributions ``(N, *input_shape)`` of ``inputs``, float32 on the CPU (computed on the encoder's device,
        in its dtype, at the precision of :mod:`lfeval.precision`).

        Parameters
        ----------
        inputs : array or tensor ``(N, *input_shape)``
        baseline : number, tensor or callable, optional
            Reference input; default the encoder's (the data set's) baseline.
        seed : int
            Seed of the method's randomness (same seed, same numbers, batch-invariant).
        batch_size : int
            Inputs per chunk.
        reference : callable or tensor, optional
            ``reference(x) -> z`` replaces z = f(x) in g_x (e.g. one-hot units, :func:`lfeval.explain_units`); a
            tensor (N, d) gives each input its own reference latent (a pair's partner f(b): s(a, b) = <f(a), f(b)>,
            :mod:`lfeval.explain.pairs`), on the encoder's device and in its dtype.
        """
        self.check_options(options)
        self.encoder = encoder = check_model(self.encoder, inputs)
        batch_size = rows_per_pass(math.prod(np.shape(inputs)[1:]), check_positive_int(batch_size, "batch_size"),
                                   device=encoder.device)
        seed = check_positive_int(seed, "seed", minimum=0)
        x = encoder.canonical(check_inputs(inputs, encoder))
        self.aux = AuxiliaryFunction(encoder)
        self.space = space = encoder.modality.attribution_space(encoder)
        per_input = threads.work_per_example(encoder, tuple(x.shape[1:]), key=encoder.module)

        def chunk(rows: slice) -> torch.Tensor:
            xb = x[rows]
            with torch.no_grad():
                z_ref = reference[rows] if torch.is_tensor(reference) else (reference or encoder)(xb)
            if space is not None and self.unit_masking:  # discrete inputs, masked token by token
                base = encoder.baseline_for(xb, baseline)
                a = space.tokens(self.attribute_batch(xb, z_ref, base, int(seed), **options)[:, 0], xb, base)
            elif space is not None:  # discrete inputs (text): attribute through the input embeddings
                a = space.attribute(self, xb, z_ref, encoder.baseline_for(xb, baseline), int(seed), options)
            else:
                base = encoder.baseline_for(xb, baseline) if self.uses_baseline else None
                a = self.attribute_batch(xb, z_ref, base, int(seed), **options)
            return a.detach().to("cpu", torch.float32)

        # inside lfeval run's thread scope (lfeval.threads.scope) only; a library call leaves the threads alone
        with threads.for_work(per_input * min(len(x), batch_size) * self.expansion(options)):
            out = run_in_chunks(chunk, len(x), batch_size)  # a CUDA out-of-memory error retries with fewer rows
        if out.numel() and not bool(torch.isfinite(out).all()):
            scale = float(x.abs().max()) if x.is_floating_point() else float("nan")
            raise InvalidInput(
                f"{self.name or type(self).__name__} gave {int((~torch.isfinite(out)).sum())} NaN/inf attribution(s) "
                f"for inputs up to |x| = {scale:.3g}: the `baseline` holds NaN/inf, the encoder returns NaN/inf, or "
                "gradients x inputs overflow float32. Pass a finite baseline and inputs on a moderate scale (e.g. "
                "rescale the data to [0, 1]).")
        return out.reshape(inputs.shape)

    #: encoder passes per input of the method's default settings (IntegratedGradients' steps, GradientShap's
    #: samples), for the thread choice; ``n_steps`` / ``n_samples`` options override it
    passes_per_input = 1

    def expansion(self, options: dict) -> int:
        """Encoder passes the method makes per input with ``options`` (its work, for :mod:`lfeval.threads`)."""
        value = options.get("n_steps", options.get("n_samples", self.passes_per_input))
        return value if isinstance(value, int) and value > 0 else self.passes_per_input

    def attribute_batch(self, x: torch.Tensor, z_ref: torch.Tensor, baseline: Optional[torch.Tensor],
                        seed: int) -> torch.Tensor:
        """Attributions of one chunk ``x`` (on the encoder's device) for the references ``z_ref``;
        ``self.aux`` is the auxiliary function g(x', z) and ``baseline`` the chunk's baseline (or None)."""
        raise NotImplementedError


__all__ = ["FeatureExplainer", "AuxiliaryFunction", "EXPLAINERS", "QUANTUS_KEYS", "register_explainer",
           "get_explainer", "explainer_names"]
