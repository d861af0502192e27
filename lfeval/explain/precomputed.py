"""A Quantus ``explain_func`` that serves explanations computed earlier and computes the rest.

Metrics re-explain: :class:`lfeval.metrics.PretextCorrelation` explains every reference encoder,
robustness metrics explain perturbed inputs, MetaQuantus explains the unperturbed batch again.
When every input of a call was already explained by the same model with the same options, e.g.
every encoder of a run on its test batch, :class:`PrecomputedExplanations` returns the stored rows
instead (in any order or subset: Quantus splits a batch into chunks, MetaQuantus takes the first
samples); otherwise the whole call goes to the fallback explain function. Rows are keyed by the
model object (weakly, so a freed model's entries go with it), the options and the exact bytes of
each input, so a lookup never returns an explanation of a different input. This relies on an
explanation of one input not depending on the other inputs of its batch, which holds for every
lfeval explainer (the stochastic ones are batch-invariant) and every example-importance method.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Callable, Optional

import numpy as np
import torch

from ..encoder import Encoder
from ..errors import InvalidArgument
from ..validation import to_numpy
from .base import QUANTUS_KEYS
from .features import explain

#: keyword arguments that do not change an explanation's values
_IGNORED = (*QUANTUS_KEYS, "targets")


def _network(model) -> torch.nn.Module:
    """The network behind a model: explanations are keyed on it, so every Encoder wrapping it shares them."""
    return model.module if isinstance(model, Encoder) else model


def _options_key(kwargs: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k not in _IGNORED))


def _row_keys(inputs) -> list:
    x = to_numpy(inputs)
    return [(row.shape, hashlib.sha1(row.tobytes()).digest()) for row in x]


class PrecomputedExplanations:
    """Explain function with a store of finished explanations.

    Parameters
    ----------
    fallback : callable, optional
        Explain function (Quantus signature) for inputs not in the store; default
        :func:`lfeval.explain`.
    method_params : dict, optional
        ``{method: {option: value}}``: options added to every call for that method (e.g.
        ``{"IntegratedGradients": {"n_steps": 32}}``), so metrics that re-explain with only
        ``method`` (PretextCorrelation, MaxSensitivity, MetaQuantus) use the run's settings.

    Notes
    -----
    Use :meth:`put` with the same keyword arguments the explain function will be called with
    (typically ``method`` and ``seed``). ``hits`` and ``misses`` count lookups.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2)).eval()
    >>> x = np.random.default_rng(0).random((4, 1, 3)).astype(np.float32)
    >>> cache = PrecomputedExplanations()
    >>> a = cache(net, x, method="Saliency")            # computed (a miss), then stored
    >>> cache.put(net, x, a, method="Saliency")
    >>> bool(np.array_equal(cache(net, x[[2, 0]], method="Saliency"), a[[2, 0]])), (cache.hits, cache.misses)
    (True, (1, 1))
    """

    def __init__(self, fallback: Optional[Callable] = None, method_params: Optional[dict] = None):
        fallback = explain if fallback is None else fallback
        if not callable(fallback):
            raise InvalidArgument(f"`fallback` must be an explain function, got {type(fallback).__name__}.")
        self.fallback = fallback
        self.method_params = {m: dict(p) for m, p in (method_params or {}).items()}
        self._store = weakref.WeakKeyDictionary()
        self.hits = self.misses = 0

    def _options(self, kwargs: dict) -> dict:
        return {**self.method_params.get(kwargs.get("method"), {}), **kwargs}

    def put(self, model: torch.nn.Module, inputs, attributions, **kwargs) -> None:
        """Store ``attributions`` (same length as ``inputs``) as the explanation of ``inputs`` by ``model``."""
        kwargs = self._options(kwargs)
        a = to_numpy(attributions)
        if len(a) != len(inputs):
            raise InvalidArgument(f"`attributions` has {len(a)} rows for {len(inputs)} inputs.")
        rows = self._store.setdefault(_network(model), {}).setdefault(_options_key(kwargs), {})
        rows.update(zip(_row_keys(inputs), a))

    def __call__(self, model, inputs, targets=None, **kwargs) -> np.ndarray:
        kwargs = self._options(kwargs)
        rows = self._store.get(_network(model), {}).get(_options_key(kwargs))
        if rows and len(inputs):
            found = [rows.get(k) for k in _row_keys(inputs)]
            if all(r is not None for r in found):
                self.hits += 1
                return np.stack(found)
        self.misses += 1
        return np.asarray(self.fallback(model=model, inputs=inputs, targets=targets, **kwargs))
