"""Your own encoders in ``lfeval run``: built by a factory (``"pkg.module:callable"`` or ``"file.py:callable"``)
with optional weights, a TorchScript file or a ``torch.export`` program, wrapped as :class:`lfeval.Encoder`.

A config names them under ``[encoders.<name>]``::

    [encoders.simclr]
    factory = "torchvision.models:resnet18"      # called with kwargs; must return an nn.Module
    kwargs = { num_classes = 128 }
    weights = "simclr.safetensors"               # or a state dict read with torch.load(weights_only=True)
    normalize = { mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }   # applied inside the encoder
    loss = "alignment"                           # or "pkg.module:callable": enables TracIn / influence
    checkpoints = ["ck1.safetensors", "ck2.safetensors"]                        # TracIn's, of this module

    [encoders.ae]
    torchscript = "ae_encoder.pt"                # or: exported = "ae_encoder.pt2"

Training is skipped for them; they meet lfeval-trained pretext encoders in the same run. The data keep
lfeval's [0, 1] range: an encoder that expects normalised inputs gets ``normalize``, so masking
baselines stay meaningful. Weights and checkpoints are read without pickle (safetensors, or
``weights_only=True``); TorchScript and exported files are programs you chose to run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from ..encoder import Encoder
from ..errors import InvalidArgument, InvalidInput
from ..modalities import get_modality
from ..validation import check_choice, check_device
from .losses import NAMED_LOSSES

SOURCES = ("factory", "torchscript", "exported")
KEYS = (*SOURCES, "kwargs", "weights", "normalize", "loss", "checkpoints", "checkpoint_lrs")


def import_object(ref: str, what: str):
    """The object ``"pkg.module:attr"`` or ``"path/file.py:attr"`` names."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise InvalidArgument(f"{what} must be 'pkg.module:name' or 'file.py:name', got {ref!r}.")
    module_name, attr = ref.split(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise InvalidArgument(f"{what}: file {str(path)!r} does not exist.")
            key = f"lfeval_user_{path.stem}"
            if key not in sys.modules:
                spec = importlib.util.spec_from_file_location(key, path)
                sys.modules[key] = module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            module = sys.modules[key]
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(f"{what}: cannot import {module_name!r} ({exc}).") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InvalidArgument(f"{what}: {module_name!r} has no {attr!r}.") from None


def _existing(path, what: str) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise InvalidArgument(f"{what} {str(p)!r} does not exist.")
    return p


def check_spec(name: str, spec) -> dict:
    """Validate one ``[encoders.<name>]`` table before anything runs (keys, one source, files, imports)."""
    where = f"encoders.{name}"
    if not isinstance(spec, dict):
        raise InvalidArgument(f"Config `{where}` must be a table (factory/torchscript/exported = ...), got {spec!r}.")
    for key in spec:
        check_choice(key, KEYS, f"key of `{where}`")
    sources = [s for s in SOURCES if s in spec]
    if len(sources) != 1:
        raise InvalidArgument(f"Config `{where}` needs exactly one of {', '.join(SOURCES)}, got {sources or 'none'}.")
    if "factory" in spec:
        if not callable(import_object(spec["factory"], f"`{where}.factory`")):
            raise InvalidArgument(f"`{where}.factory` {spec['factory']!r} is not callable.")
        if not isinstance(spec.get("kwargs", {}), dict):
            raise InvalidArgument(f"`{where}.kwargs` must be a table of keyword arguments.")
    elif "kwargs" in spec or "weights" in spec:
        raise InvalidArgument(f"`{where}`: kwargs and weights go with a factory; a {sources[0]} file holds its own.")
    for key in ("weights", "torchscript", "exported"):
        if key in spec:
            _existing(spec[key], f"`{where}.{key}`")
    checkpoints = spec.get("checkpoints", [])
    if not isinstance(checkpoints, list):
        raise InvalidArgument(f"`{where}.checkpoints` must be a list of state-dict files.")
    for ck in checkpoints:
        _existing(ck, f"`{where}.checkpoints` entry")
    lrs = spec.get("checkpoint_lrs")
    if lrs is not None and (not isinstance(lrs, list) or len(lrs) != len(checkpoints)):
        raise InvalidArgument(f"`{where}.checkpoint_lrs` must list one learning rate per checkpoint.")
    loss = spec.get("loss")
    if loss is not None and loss not in NAMED_LOSSES:
        if not isinstance(loss, str) or ":" not in loss:
            raise InvalidArgument(f"`{where}.loss` must be one of {sorted(NAMED_LOSSES)} or 'pkg.module:callable' "
                                  f"(loss(forward, x, y, extra) -> (N,)), got {loss!r}.")
        if not callable(import_object(loss, f"`{where}.loss`")):
            raise InvalidArgument(f"`{where}.loss` must be one of {sorted(NAMED_LOSSES)} or name a callable.")
    norm = spec.get("normalize")
    if norm is not None and (not isinstance(norm, dict) or set(norm) != {"mean", "std"}):
        raise InvalidArgument(f"`{where}.normalize` must be {{mean = [...], std = [...]}} (one value per channel).")
    return spec


class Normalized(nn.Module):
    """(x - mean) / std per channel, then the wrapped network: data stay in [0, 1] for masking."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.net((x - self.mean.view(shape)) / self.std.view(shape))


def read_state(path) -> dict:
    """A state dict from a ``.safetensors`` file or a torch file read with ``weights_only=True``."""
    path = Path(str(path)).expanduser()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means it is not a readable state dict
        raise InvalidInput(f"Cannot read weights from {path} ({type(exc).__name__}: {exc}); give a .safetensors "
                           "file or a torch state dict.") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInput(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return state


def build_module(name: str, spec: dict, seed: int = 0, modality=None) -> nn.Module:
    """The network a spec describes, in eval mode (weights loaded). A factory runs with torch's generator
    seeded by ``seed``, so randomly initialised weights are the same on every run. A factory may return an
    :class:`lfeval.Encoder` (``lfeval.text:minilm_encoder``): its network is used, and its modality must be the
    data's (``modality``, a name or object) when given."""
    where = f"encoders.{name}"
    if "factory" in spec:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = import_object(spec["factory"], f"`{where}.factory`")(**spec.get("kwargs", {}))
        if not isinstance(module, nn.Module):
            raise InvalidArgument(f"`{where}.factory` returned {type(module).__name__}, not a torch.nn.Module.")
        if isinstance(module, Encoder):  # the data set gives the modality and baseline; the network is kept
            if modality is not None and module.modality != modality:
                raise InvalidArgument(f"`{where}.factory` returned a {module.modality.name} encoder, but the data are "
                                      f"{get_modality(modality).name}; name a data set of its modality (e.g. "
                                      "text:rotten_tomatoes for lfeval.text:minilm_encoder).")
            module = module.module
        if "weights" in spec:
            try:
                module.load_state_dict(read_state(spec["weights"]))
            except RuntimeError as exc:
                raise InvalidInput(f"`{where}.weights` do not fit the factory's module: {exc}") from None
        module.eval()
    elif "torchscript" in spec:
        module = torch.jit.load(str(Path(spec["torchscript"]).expanduser()), map_location="cpu").eval()
    else:
        module = torch.export.load(str(Path(spec["exported"]).expanduser())).module()
        for m in module.modules():  # an exported program's behaviour is fixed at export; it has no .eval()
            m.training = False
    if spec.get("normalize"):
        if modality is not None and not get_modality(modality).continuous:
            raise InvalidArgument(f"`{where}.normalize` rescales input values; {get_modality(modality).name} inputs "
                                  "are token ids: drop `normalize`.")
        module = Normalized(module, spec["normalize"]["mean"], spec["normalize"]["std"]).eval()
    return module


def load_encoder(name: str, spec: dict, ds, device=None, seed: int = 0) -> Encoder:
    """The :class:`lfeval.Encoder` of ``[encoders.<name>]`` on data set ``ds``: its modality, baseline and
    input shape, the loss and checkpoints that TracIn and influence functions need, checked on two inputs.
    It lives on ``device`` (default CPU; checked by :func:`lfeval.validation.check_device`) in the dtype its
    factory or file gave it (a float64 module stays float64)."""
    check_spec(name, spec)
    module = build_module(name, spec, seed, modality=ds.modality).to(check_device(device))
    loss = spec.get("loss")
    if loss is not None:
        loss = (NAMED_LOSSES[loss](ds.modality) if loss in NAMED_LOSSES
                else import_object(loss, f"`encoders.{name}.loss`"))
    prefix = "net." if spec.get("normalize") else ""
    lrs = spec.get("checkpoint_lrs") or [1.0] * len(spec.get("checkpoints", []))
    checkpoints = [{"state_dict": {prefix + k: v for k, v in read_state(ck).items()}, "lr": float(lr)}
                   for ck, lr in zip(spec.get("checkpoints", []), lrs)]
    differentiable = "factory" in spec  # TorchScript and exported programs do not run under torch.func
    enc = Encoder(module, modality=ds.modality, baseline=ds.baseline, input_shape=ds.input_shape,
                  pretext_model=module if differentiable and loss is not None else None,
                  loss=loss if differentiable else None, checkpoints=checkpoints, name=name,
                  config={"source": next(s for s in ("factory", "torchscript", "exported") if s in spec), **spec})
    with torch.no_grad():
        try:
            enc(ds.x_test[:2])  # placed on its device and dtype by the encoder
        except (InvalidArgument, InvalidInput) as exc:
            raise type(exc)(f"Encoder {name!r} on {ds.name}: {exc}") from None
    return enc.eval()
