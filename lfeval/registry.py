"""One registry type for every kind of named thing lfeval looks up: explainers, example-importance methods,
metrics, modalities and data sets (scikit-learn's and torchmetrics' habit of one lookup with one error).

A :class:`Registry` maps names to objects, registers with a call or as a class decorator, and answers an unknown
name with :class:`lfeval.errors.UnknownName` naming the closest registered one (:func:`closest`, the one "did you
mean" of the package). It is an ordinary mapping, so ``name in registry``, ``list(registry)`` and
``registry.pop(name)`` work as on a dict.

>>> colours = Registry("colour")
>>> colours.register("red", 1)
1
>>> @colours.register("green")
... class Green: ...
>>> colours.names()
('red', 'green')
>>> colours.get("gren")
Traceback (most recent call last):
...
lfeval.errors.UnknownName: Unknown colour 'gren'. Did you mean 'green'? Valid values: 'red', 'green'.
"""

from __future__ import annotations

import difflib
from collections.abc import MutableMapping
from typing import Callable, Iterable, Optional

from .errors import InvalidArgument, UnknownName


def closest(value, choices: Iterable) -> str:
    """`` Did you mean 'x'?`` for the choice closest to ``value`` (empty when none is close): the one
    suggestion text of lfeval's errors."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown(value, choices: Iterable, name: str) -> UnknownName:
    """The error for ``value`` not among ``choices`` (what ``name`` says it is), with the closest choice."""
    choices = list(choices)
    return UnknownName(f"Unknown {name} {value!r}.{closest(value, choices)} Valid values: "
                       f"{', '.join(map(repr, choices))}.")


#: ``register(name)`` without an object: the decorator form (None is refused, never stored)
_DECORATOR = object()


class Registry(MutableMapping):
    """Name -> object, in registration order.

    Parameters
    ----------
    kind : str
        What an entry is, for errors (``"explanation method"``, ``"metric"``, ...).
    check : callable, optional
        ``check(name, obj)`` raises :class:`~lfeval.errors.InvalidArgument` for an object of the wrong type
        (and may return a replacement object); run by :meth:`register`.
    """

    def __init__(self, kind: str, check: Optional[Callable] = None):
        self.kind = kind
        self._check = check
        self._items: dict = {}

    def register(self, name: str, obj=_DECORATOR):
        """Add (or replace) ``obj`` under ``name`` and return it; without ``obj``, a class decorator."""
        if obj is _DECORATOR:
            return lambda o: self.register(name, o)
        if obj is None:
            raise InvalidArgument(f"Nothing to register as {self.kind} {name!r}: got None.")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"A {self.kind} is registered under a non-empty name (str), got {name!r}.")
        if self._check is not None:
            checked = self._check(name, obj)
            obj = obj if checked is None else checked
        self._items[name] = obj
        return obj

    def get(self, name):
        """The object registered under ``name``; an unknown name raises :class:`~lfeval.errors.UnknownName`
        naming the closest registered one (unlike ``dict.get``, there is no silent default)."""
        return self[name]

    def names(self) -> tuple:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __getitem__(self, name):
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise unknown(name, self._items, self.kind) from None

    def __setitem__(self, name, obj) -> None:
        self.register(name, obj)

    def __delitem__(self, name) -> None:
        del self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name) -> bool:
        try:
            return name in self._items
        except TypeError:  # an unhashable name is simply not registered
            return False

    def pop(self, name, *default):
        """Remove ``name`` and return its object; ``default`` when given and ``name`` is not registered (as on a
        dict: ``registry.pop(name, None)`` never raises)."""
        if default and name not in self:
            return default[0]
        return super().pop(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"


__all__ = ["Registry", "closest", "unknown"]
