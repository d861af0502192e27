"""Training steps recorded once as a CUDA graph and replayed (``train_encoder``/``train_ensemble(...,
cuda_graph=True)``).

A small encoder's eager step on a GPU is mostly host work: Python, autograd and some sixty kernel launches for
each batch (3.4 ms for the MNIST autoencoder at batch 256 on an H200, whose arithmetic takes a fraction of
that; benchmarks/README.md). A CUDA graph replays the whole step, forward, backward, Adam and the running loss,
with one launch (torch's "whole-network capture"). It runs on fixed buffers, so each batch is copied into them
first; its random draws (corruptions, views, VAE noise) are made as the eager step makes them, from the same CPU
generators in the same order, outside the graph. A batch of another shape (an epoch's last) runs eagerly with
the same optimizer.

:class:`EagerStep` is lfeval's training step as it always ran (the default, lone and ensembled). :class:`StaticStep`
adds the graph's bookkeeping to it, on any device: the same weights as the eager step, bit for bit, which the tests
check on the CPU. :class:`GraphedStep` records its step as a CUDA graph after a few
eager warm-up steps on the side stream it then captures on (the optimizer's state and the cuDNN and cuBLAS handles
of that stream then exist before the capture; torch's ``make_graphed_callables`` does the same).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from .. import precision as precision_mod


class EagerStep:
    """Training steps of ``losses`` with ``opt``, each run as it comes.

    ``losses(x, y, drawn)`` is a batch's loss: a scalar (a lone model) or one per member (an ensemble, whose
    members sit on dim 0 of x, y and the draws); each step minimises its sum. ``total`` is the epoch's running sum,
    to which each step adds ``loss x`` the batch's rows (``x.shape[batch_dim]``); :meth:`reset` zeroes it at an
    epoch's start and returns it. :meth:`step` takes a batch and its draws, made by the caller from its seeded CPU
    generators (:meth:`lfeval.models.PretextTask.draws`), and runs the step under the precision in force
    (bfloat16 autocast under ``lfeval.precision.use("bf16")``)."""

    def __init__(self, losses: Callable, opt: torch.optim.Optimizer, total: torch.Tensor, batch_dim: int = 0):
        self.losses, self.opt, self.total, self.batch_dim = losses, opt, total, batch_dim
        self.device = total.device

    def reset(self) -> torch.Tensor:
        self.total.zero_()
        return self.total

    def step(self, x: torch.Tensor, y: torch.Tensor, drawn) -> None:
        self._train(x, y, drawn)

    def _train(self, x, y, drawn, cache: bool = True) -> None:
        """One step on ``(x, y, drawn)``; ``cache=False`` inside a CUDA graph capture
        (:func:`lfeval.precision.autocast`)."""
        with precision_mod.autocast(self.device, cache=cache):
            loss = self.losses(x, y, drawn)
        self._update(loss)
        self.total += loss.detach().to(self.total.dtype) * x.shape[self.batch_dim]

    def _update(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # an ensemble's members share nothing: each gradient is its own loss's
        self.opt.step()


class StaticStep(EagerStep):
    """:class:`EagerStep` through fixed buffers: each batch and its draws are copied into them and the step runs
    on them (a CUDA graph's bookkeeping); a batch of another shape than the first runs as it comes."""

    def __init__(self, losses, opt, total, batch_dim=0):
        super().__init__(losses, opt, total, batch_dim)
        self.x = self.y = self.drawn = None  # the buffers, shaped at the first batch
        self.aliased = ()  # which draws are the input itself (a task that does not corrupt it)

    def step(self, x: torch.Tensor, y: torch.Tensor, drawn) -> None:
        if self.x is None:
            self._bind(x, y, drawn)
        elif x.shape != self.x.shape:  # an epoch's last, smaller batch: an eager step
            self._train(x, y, drawn)
            return
        self.x.copy_(x)
        self.y.copy_(y)
        for buf, value, aliased in zip(_tensors(self.drawn), _tensors(drawn), self.aliased):
            if not aliased:
                buf.copy_(value)
        self._replay()

    def _bind(self, x, y, drawn) -> None:
        self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        self.aliased = tuple(t is x for t in _tensors(drawn))
        if drawn is not None:
            made = tuple(self.x if a else torch.empty_like(t) for t, a in zip(_tensors(drawn), self.aliased))
            self.drawn = made if isinstance(drawn, tuple) else made[0]

    def _replay(self) -> None:
        self._run()

    def _run(self) -> None:
        """The step on the buffers: the eager step's arithmetic."""
        self._train(self.x, self.y, self.drawn, cache=False)


class GraphedStep(StaticStep):
    """:class:`StaticStep` whose step, after :data:`WARMUP` eager ones, is a CUDA graph replayed once per batch.
    ``opt`` must be capturable (:func:`lfeval.models.training._adam` with ``capturable=True``: the learning rate a
    device tensor, so that a schedule's rate reaches the replayed Adam)."""

    #: eager steps on the capture's stream before the capture (torch's advice; the optimizer's state is made by them)
    WARMUP = 3

    def __init__(self, losses, opt, total, batch_dim=0):
        super().__init__(losses, opt, total, batch_dim)
        self.graph, self.warm = None, 0
        self.side = torch.cuda.Stream(self.device)  # the warm-up's and the capture's stream

    def _update(self, loss: torch.Tensor) -> None:
        with warnings.catch_warnings():  # a capturable Adam stepped outside a graph (warm-up, last batch) says so
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            super()._update(loss)

    def _replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.warm < self.WARMUP:  # a real training step, on the side stream
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side):
                self._run()
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            self.warm += 1
            return
        self.opt.zero_grad(set_to_none=True)  # the gradients are made inside the graph's memory
        graph = torch.cuda.CUDAGraph()
        # records the step (it runs at the replay); thread_local: CUDA work on the caller's other threads (an
        # ensemble's draws, a pipeline's) does not break this thread's capture
        with torch.cuda.graph(graph, stream=self.side, capture_error_mode="thread_local"):
            self._run()
        self.graph = graph
        graph.replay()


def _tensors(drawn) -> tuple:
    if drawn is None:
        return ()
    return drawn if isinstance(drawn, tuple) else (drawn,)


__all__ = ["EagerStep", "GraphedStep", "StaticStep"]
