"""``lfeval.examples``: label-free example importance (Crabbé & van der Schaar 2022, §2.2).

The methods live in :mod:`lfeval.explain.examples`; this module makes ``import lfeval.examples``
and ``from lfeval.examples import importance`` work as the user guide (``docs/guide/explanations.md``) shows them.

>>> import torch, lfeval.examples
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2)).eval()
>>> S = lfeval.examples.importance(net, torch.rand(10, 1, 3), torch.rand(4, 1, 3), method="cosine")
>>> tuple(S.shape)      # (n_test, n_train), higher = more important
(4, 10)
"""

from .explain.examples import (
    EXAMPLE_METHODS,
    LOSS_BASED,
    METHODS,
    CosineSimilarity,
    DkNN,
    ExampleImportance,
    InfluenceFunctions,
    SimplEx,
    TracIn,
    explain_func,
    importance,
    register_example_method,
)

__all__ = ["EXAMPLE_METHODS", "LOSS_BASED", "METHODS", "CosineSimilarity", "DkNN", "ExampleImportance",
           "InfluenceFunctions", "SimplEx", "TracIn", "explain_func", "importance", "register_example_method"]
