"""The encoder contract: :class:`Encoder`, an ``nn.Module`` that carries what lfeval needs to know
about the network it wraps.

Every explainer, metric, adapter and perturbation test reads the modality, the masking baseline, the
input shape, the device and, for the loss-based example methods, the pretext model, its loss and
the training checkpoints from this one object. :func:`lfeval.models.train_encoder` returns one; a
plain module is wrapped by :func:`as_encoder` with documented defaults. Quantus and MetaQuantus
still see an ``nn.Module``: calling an Encoder calls the wrapped network.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
>>> enc = as_encoder(net, torch.zeros(2, 1, 8, 8))         # modality read from the sample shape
>>> enc.modality.name, enc.input_shape, tuple(enc(torch.zeros(2, 1, 8, 8)).shape)
('image', (1, 8, 8), (2, 4))
>>> float(enc.baseline_for(torch.ones(2, 1, 8, 8)).abs().sum())   # documented default: zeros
0.0
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import torch
from torch import nn

from . import precision as precision_mod
from .errors import InvalidArgument, InvalidInput
from .memory import OOM_ERRORS
from .modalities import default_modality, get_modality
from .validation import as_tensor, check_module, model_device, model_dtype

#: the per-call data of an Encoder that are not modules (kept out of state_dict and .modules())
_FIELDS = ("modality", "baseline", "input_shape", "native_shape", "pretext", "pretext_model", "loss",
           "checkpoints", "history", "config", "name")


class Encoder(nn.Module):
    """An encoder f: ``(N, *input_shape) -> (N, d)`` and what explaining it needs.

    Parameters
    ----------
    module : nn.Module
        The network. Its parameters are this module's parameters.
    modality : str or Modality, optional
        ``"image"``, ``"tabular"``, ``"time_series"`` (or a :class:`lfeval.modalities.Modality`).
        Default: :func:`lfeval.modalities.default_modality` of ``input_shape``.
    baseline : number, tensor or callable, optional
        The masking/reference input: a number, a tensor broadcastable to one input, or a callable
        mapping a batch to a batch of baselines (e.g. :class:`lfeval.data.GaussianBlur`). Default:
        the modality's rule (zeros).
    input_shape : tuple, optional
        One input's shape as the module takes it. lfeval works in the modality's canonical layout
        (:meth:`Modality.canonical_shape`, e.g. (1, D) for a tabular module of (N, D) rows) and
        reshapes before calling the module.
    pretext, pretext_model, loss, checkpoints :
        What the loss-based example methods (TracIn, influence functions) differentiate: the task's
        name, the full model (encoder + decoder/head, with this encoder's ``module`` inside it), the
        per-example loss ``loss(forward, x, y, extra) -> (N,)`` and training checkpoints
        ``[{"state_dict", "lr"}, ...]`` of the full model.
    history, config, name :
        Training record, training settings and a display name.
    """

    def __init__(self, module: nn.Module, modality=None, baseline=None, input_shape=None, pretext=None,
                 pretext_model: Optional[nn.Module] = None, loss: Optional[Callable] = None, checkpoints=None,
                 history=None, config=None, name: Optional[str] = None):
        super().__init__()
        if isinstance(module, Encoder):
            raise InvalidArgument("`module` is already an lfeval.Encoder; use encoder.replace(...) to change it.")
        if not isinstance(module, nn.Module):
            raise InvalidArgument(f"`module` must be a torch.nn.Module, got {type(module).__name__}.")
        self.module = module
        native = None if input_shape is None else tuple(int(s) for s in input_shape)
        if modality is None:
            if native is None:
                raise InvalidArgument("Encoder needs `modality` or `input_shape` (to apply the default modality).")
            modality = default_modality(native)
        modality = get_modality(modality)
        canonical = None if native is None else modality.canonical_shape(native)
        if canonical is not None:
            modality.check_sample_shape(canonical, "input_shape")
        if pretext_model is not None and not any(m is module for m in pretext_model.modules()):
            raise InvalidArgument("`pretext_model` must contain the encoder's `module` (its parameters are "
                                  "differentiated through the full model).")
        values = dict(modality=modality, baseline=baseline, input_shape=canonical, native_shape=native,
                      pretext=pretext, pretext_model=pretext_model, loss=loss, checkpoints=list(checkpoints or []),
                      history=dict(history or {}), config=dict(config or {}), name=name)
        for key, value in values.items():  # plain attributes: a full model must not become a submodule
            object.__setattr__(self, key, value)
        self.training = module.training

    # ------------------------------------------------------------------ the network
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the module's output, checked to be the latent batch (N, d).

        Inputs are first converted by :meth:`network_input` (differentiably, so attributions flow back to the
        caller's tensor), and run under :func:`lfeval.precision.autocast` when
        bfloat16 autocast was asked for. A latent narrower than float32 is returned as float32: the
        explanation maths (distances, dot products, sums over features) run in float32 at least."""
        x = self.network_input(x)
        if self.native_shape is not None and self.native_shape != self.input_shape:
            x = x.reshape(len(x), *self.native_shape)
        try:
            with precision_mod.autocast(x.device):
                z = self.module(x)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            if isinstance(exc, (InvalidArgument, InvalidInput) + OOM_ERRORS):  # out of memory: retried by the caller
                raise
            raise InvalidInput(f"The encoder failed on inputs of shape {tuple(x.shape)}: "
                               f"{type(exc).__name__}: {exc}. Pass inputs in the layout the module takes.") from exc
        if not isinstance(z, torch.Tensor):
            raise InvalidArgument(
                f"The encoder returned a {type(z).__name__}, not a tensor: lfeval explains a representation "
                "f(x) of shape (N, d). Wrap the module so it returns that tensor (e.g. the first element or the "
                "pooled output).")
        if z.ndim != 2 or z.shape[0] != x.shape[0]:
            raise InvalidArgument(
                f"The encoder returned shape {tuple(z.shape)} for {x.shape[0]} inputs; lfeval explains a "
                "representation of shape (N, d). Flatten or pool the output (a scalar per sample is (N, 1)).")
        if z.is_floating_point() and z.dtype.itemsize < 4:
            z = z.float()
        return z

    def _apply(self, fn, recurse=True):
        """``.to()``, ``.cuda()``, ``.double()``, ...: the pretext model (which holds the network, and whose loss
        TracIn and influence functions differentiate) moves with the network."""
        super()._apply(fn, recurse)
        if self.pretext_model is not None:
            self.pretext_model._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> "Encoder":
        """As ``nn.Module.train``; a ``torch.export`` program, whose behaviour is fixed at export and which
        refuses ``.train()``/``.eval()``, only has its flags set."""
        try:
            return super().train(mode)
        except NotImplementedError:
            for m in self.modules():
                m.training = mode
            return self

    @property
    def device(self) -> torch.device:
        """Where the network's parameters live; lfeval computes there."""
        return model_device(self.module)

    @property
    def dtype(self) -> torch.dtype:
        """The network's floating dtype (its first floating parameter's; float32 for a parameter-free module)."""
        return model_dtype(self.module)

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype the network takes: its own for real-valued data, at least float32 for token ids
        (:meth:`lfeval.modalities.Modality.input_dtype`)."""
        return self.modality.input_dtype(self.dtype)

    @property
    def data_dtype(self) -> torch.dtype:
        """The dtype lfeval holds this encoder's inputs, baselines, masks and attributions in: the input dtype,
        at least float32 (a float64 encoder's data are float64; a bfloat16 network's stay float32, so
        interpolation paths, masks and gradients keep float32 resolution and NumPy can hold them)."""
        return torch.promote_types(self.input_dtype, torch.float32)

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the encoder's device, in its :attr:`data_dtype`: the one conversion at every boundary (NumPy
        from Quantus, CPU data with a CUDA encoder, float32 data with a float64 encoder). A no-op when ``x`` is
        already there; differentiable otherwise, so attributions flow back to the caller's tensor."""
        return _moved(x, self.device, self.data_dtype)

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the encoder's device, in the dtype the network itself takes (:attr:`input_dtype`): what
        :meth:`forward` feeds the module, and what a caller of the pretext model (which bypasses the Encoder)
        passes it."""
        return _moved(x, self.device, self.input_dtype)

    # ------------------------------------------------------------------ data
    def check_sample_shape(self, shape: tuple, name: str = "inputs") -> None:
        """Raise :class:`lfeval.errors.InvalidInput` if samples of ``shape`` do not fit this encoder
        (its input shape in the canonical or the module's native layout, when known)."""
        shape = tuple(shape)
        if self.input_shape is None:
            self.modality.check_sample_shape(shape, name)
        elif shape not in (self.input_shape, self.native_shape):
            raise InvalidInput(f"`{name}` samples have shape {shape}, but the encoder takes {self.input_shape} "
                               f"({self.modality.name} data laid out {self.modality.layout}).")

    def canonical(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the module's native layout, reshaped to the canonical one lfeval and Quantus use."""
        if self.input_shape is not None and tuple(x.shape[1:]) == self.native_shape:
            return x.reshape(len(x), *self.input_shape)
        return x

    def baseline_for(self, x: torch.Tensor, baseline=None) -> torch.Tensor:
        """The masking baseline of a batch ``x`` (N, ...), shaped like ``x``: ``baseline`` if given
        (number, tensor or callable on the batch), else the encoder's, else the modality's rule."""
        if baseline is None:
            baseline = self.baseline
        if baseline is None:
            baseline = self.modality.default_baseline(shape=tuple(x.shape[1:]))
        if callable(baseline) and not isinstance(baseline, torch.Tensor):
            out = baseline(x)
        else:
            out = as_tensor(baseline, "baseline", device=x.device)
        out = torch.as_tensor(out, dtype=x.dtype, device=x.device)
        if out.ndim > x.ndim:
            out = None
        try:
            return out.expand_as(x)
        except (RuntimeError, AttributeError):
            shape = "?" if out is None else tuple(out.shape)
            raise InvalidArgument(
                f"`baseline` of shape {shape} does not broadcast to the inputs {tuple(x.shape)}; pass a number, "
                "one input's shape, a batch of the inputs' shape, or a callable on the batch."
            ) from None

    def n_features(self, shape: Optional[tuple] = None) -> int:
        """Masking units per input (pixels for images, entries otherwise)."""
        shape = shape or self.input_shape
        if shape is None:
            raise InvalidArgument("The encoder's input shape is unknown; pass `shape`.")
        return self.modality.n_features(shape)

    # ------------------------------------------------------------------ copies
    def replace(self, **changes) -> "Encoder":
        """A new Encoder with some fields changed (the module is shared unless ``module=`` is given)."""
        values = {key: getattr(self, key) for key in _FIELDS if key not in ("input_shape", "native_shape")}
        values["input_shape"] = self.native_shape
        values["module"] = self.module
        values.update(changes)
        if "module" in changes and "pretext_model" not in changes:
            values["pretext_model"] = None  # the old full model holds the old module
        return Encoder(**values).train(self.training)

    def copy(self) -> "Encoder":
        """A deep copy of the network (and of the pretext model that holds it), sharing the read-only
        checkpoints and history: what MetaQuantus' model perturbations perturb."""
        memo = {id(v): v for v in (self.checkpoints, self.history, self.config, self.modality)}
        if callable(self.baseline) and not isinstance(self.baseline, torch.Tensor):
            memo[id(self.baseline)] = self.baseline
        return copy.deepcopy(self, memo)

    def extra_repr(self) -> str:
        shape = "?" if self.input_shape is None else "x".join(map(str, self.input_shape))
        return f"modality={self.modality.name}, input_shape={shape}, pretext={self.pretext}"


def _moved(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``x`` on ``device`` in ``dtype``, copied only when it is not there already."""
    if x.device != device or x.dtype != dtype:
        x = x.to(device=device, dtype=dtype)
    return x


def as_encoder(model, inputs=None, modality=None, baseline=None, input_shape=None, **fields) -> Encoder:
    """The :class:`Encoder` for ``model``.

    An Encoder is returned as it is (or, given fields, a copy with them replaced). A plain
    ``nn.Module`` is wrapped with the documented defaults: the modality of ``input_shape`` (default:
    one sample of ``inputs``) by :func:`lfeval.modalities.default_modality`, the modality's baseline
    (zeros), no pretext loss and no checkpoints (TracIn and influence functions then need them passed).
    """
    changes = {k: v for k, v in dict(modality=modality, baseline=baseline, **fields).items() if v is not None}
    if isinstance(model, Encoder):
        if input_shape is not None:
            changes["input_shape"] = input_shape
        return model.replace(**changes) if changes else model
    check_module(model)
    if input_shape is None and inputs is not None:
        shape = tuple(inputs.shape[1:]) if hasattr(inputs, "shape") else None
        input_shape = shape
    if input_shape is None and modality is None:
        raise InvalidArgument("Wrapping a plain module needs `inputs` or `input_shape` (to choose its modality).")
    if input_shape is not None and math.prod(input_shape) == 0:
        raise InvalidInput(f"Input shape {tuple(input_shape)} has no features.")
    return Encoder(model, input_shape=input_shape, **changes).eval()


def check_model(model, inputs=None, name: str = "model", **contract) -> Encoder:
    """The :class:`Encoder` of ``model`` (eval mode checked): an Encoder is returned as it is, a plain
    module is wrapped with the documented defaults (:func:`as_encoder`), its modality read from
    ``inputs``' sample shape. ``name`` names the argument in errors."""
    check_module(model, name)
    return as_encoder(model, inputs, **contract)


__all__ = ["Encoder", "as_encoder", "check_model"]
