"""Data modalities (image, tabular, time series, text) as objects, and their registry.

Every modality-dependent decision (layout, masking unit, baseline rule, Quantus ``DataType``,
augmentation, architecture, plot) is a method of a :class:`Modality`; code asks the encoder's or
the data set's modality instead of looking at ``ndim``.

>>> get_modality("image").n_features((3, 32, 32))      # a pixel is masked in every channel
1024
>>> get_modality("tabular").canonical_shape((30,))      # Quantus needs a channel axis
(1, 30)
>>> str(get_modality("time_series").data_type)
'DataType.TIMESERIES'
"""

from __future__ import annotations

from ..errors import InvalidArgument
from ..registry import Registry
from .base import Modality
from .image import Image
from .tabular import Tabular
from .text import Text
from .time_series import TimeSeries


def _check(name, modality) -> None:
    if not isinstance(modality, Modality):
        raise InvalidArgument(f"register_modality needs a Modality instance, got {type(modality).__name__}.")


#: name -> :class:`Modality` instance (a :class:`lfeval.registry.Registry`)
MODALITIES = Registry("modality", check=_check)


def register_modality(modality: Modality) -> Modality:
    """Add a :class:`Modality` instance under its ``name`` (a new modality is one file plus this call)."""
    _check(None, modality)  # before reading ``modality.name``
    return MODALITIES.register(modality.name, modality)


def get_modality(modality) -> Modality:
    """The registered :class:`Modality` for a name (or the modality itself)."""
    if isinstance(modality, Modality):
        return modality
    return MODALITIES.get(modality)


def default_modality(sample_shape: tuple) -> Modality:
    """The documented default for a plain module given no modality, from one input's shape:
    (D,) or (1, D) -> tabular, (C, T) with C > 1 -> time series, (C, H, W) -> image. A univariate series
    (1, T) is read as a tabular row: pass ``modality="time_series"`` to :func:`lfeval.as_encoder` (or use
    an :class:`lfeval.Encoder` from a time-series data set) to treat it as a series."""
    shape = tuple(sample_shape)
    if len(shape) == 1 or (len(shape) == 2 and shape[0] == 1):
        return MODALITIES["tabular"]
    if len(shape) == 2:
        return MODALITIES["time_series"]
    if len(shape) == 3:
        return MODALITIES["image"]
    raise InvalidArgument(
        f"No default modality for samples of shape {shape}; pass modality= one of {sorted(MODALITIES)} "
        "and inputs in its layout."
    )


for _m in (Image(), Tabular(), TimeSeries(), Text()):
    register_modality(_m)

__all__ = ["Modality", "Image", "Tabular", "TimeSeries", "Text", "MODALITIES", "register_modality", "get_modality",
           "default_modality"]
