"""A training step recorded once as a CUDA graph and replayed (``train_encoder(..., cuda_graph=True)``).

A small encoder's eager step on a GPU is mostly host work: Python, autograd and some sixty kernel launches for
each batch (3.4 ms for the MNIST autoencoder at batch 256 on an H200, whose arithmetic takes a fraction of
that; benchmarks/README.md). A CUDA graph replays the whole step, forward, backward, Adam and the running loss,
with one launch (torch's "whole-network capture"). It runs on fixed buffers, so each full batch is gathered into
them first; its random draws (corruptions, views, VAE noise) are made as the eager step makes them, from the
same CPU generator in the same order, outside the graph. A batch of another size (the epoch's last) runs eagerly
with the same optimizer.

:class:`StaticStep` is that bookkeeping with an eager step, on any device: the same weights as the eager loop,
bit for bit, which the tests check on the CPU. :class:`GraphedStep` records its step as a CUDA graph after a few
eager warm-up steps on the side stream it then captures on (the optimizer's state and the cuDNN and cuBLAS handles
of that stream then exist before the capture; torch's ``make_graphed_callables`` does the same).
"""

from __future__ import annotations

import warnings

import torch

from .. import precision as precision_mod


class StaticStep:
    """Training steps of ``model`` with ``opt`` on full batches of ``batch_size``, through fixed buffers.

    Call :meth:`reset` at an epoch's start (it returns the epoch's running loss sum, a device tensor in ``acc``
    that every step adds ``loss x batch`` to), then :meth:`step` for each batch (``idx``: its indices into
    ``x_tr``/``y_tr``), drawing from ``generator``."""

    def __init__(self, model, opt: torch.optim.Optimizer, batch_size: int, acc: torch.dtype, device: torch.device):
        self.model, self.opt, self.batch_size, self.device = model, opt, batch_size, torch.device(device)
        self.total = torch.zeros((), dtype=acc, device=self.device)
        self.x = self.y = self.drawn = None  # the buffers, shaped at the first full batch

    def reset(self) -> torch.Tensor:
        self.total.zero_()
        return self.total

    def step(self, x_tr: torch.Tensor, y_tr: torch.Tensor, idx: torch.Tensor, generator: torch.Generator) -> None:
        if len(idx) != self.batch_size:  # the epoch's last, smaller batch: an eager step
            with precision_mod.autocast(self.device):
                loss = self.model.loss(x_tr[idx], y_tr[idx], generator=generator)
            self._update(loss)
            self.total += loss.detach().to(self.total.dtype) * len(idx)
            return
        if self.x is None:
            self.x, self.y = x_tr.new_empty((len(idx), *x_tr.shape[1:])), y_tr.new_empty((len(idx), *y_tr.shape[1:]))
        torch.index_select(x_tr, 0, idx, out=self.x)  # gathered straight into the buffers: no copy
        torch.index_select(y_tr, 0, idx, out=self.y)
        with precision_mod.autocast(self.device):  # as the eager step draws them: same generator, same order
            drawn = self.model.task.draws(self.model, self.x, generator)
        self._load(drawn)
        self._replay()

    def _load(self, drawn) -> None:
        """Copy this batch's draws into the draw buffers (made at the first batch; none for a task that returns
        the input itself, such as reconstruction)."""
        if self.drawn is None:
            self.drawn = _buffers(drawn, self.x)
        for buf, value in zip(_tensors(self.drawn), _tensors(drawn)):
            if buf is not value:
                buf.copy_(value)

    def _replay(self) -> None:
        self._run()

    def _run(self) -> None:
        """The step on the buffers: the same arithmetic as the eager step's ``model.loss``."""
        with precision_mod.autocast(self.device, cache=False):
            loss = self.model.task.loss_given(self.model, self.x, self.y, self.drawn).mean()
        self._update(loss)
        self.total += loss.detach().to(self.total.dtype) * self.batch_size

    def _update(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with warnings.catch_warnings():  # a capturable Adam stepped outside a graph (warm-up, last batch) says so
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            self.opt.step()


class GraphedStep(StaticStep):
    """:class:`StaticStep` whose step, after :data:`WARMUP` eager ones, is a CUDA graph replayed once per batch.
    ``opt`` must be capturable (:func:`lfeval.models.training._adam` with ``capturable=True``: the learning rate a
    device tensor, so that a schedule's rate reaches the replayed Adam)."""

    #: eager steps on the capture's stream before the capture (torch's advice; the optimizer's state is made by them)
    WARMUP = 3

    def __init__(self, model, opt, batch_size, acc, device):
        super().__init__(model, opt, batch_size, acc, device)
        self.graph, self.warm = None, 0
        self.side = torch.cuda.Stream(self.device)  # the warm-up's and the capture's stream

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
        # records the step (it runs at the replay); thread_local: CUDA work on the caller's other threads (a
        # pipeline's, a notebook's) does not break this thread's capture
        with torch.cuda.graph(graph, stream=self.side, capture_error_mode="thread_local"):
            self._run()
        self.graph = graph
        graph.replay()


def _tensors(drawn) -> tuple:
    if drawn is None:
        return ()
    return drawn if isinstance(drawn, tuple) else (drawn,)


def _buffers(drawn, x: torch.Tensor):
    """Buffers shaped as ``drawn`` (None, a tensor or a tuple of them); the input buffer itself where a task's draw
    is the input."""
    if drawn is None:
        return None
    made = tuple(t if t is x else torch.empty_like(t) for t in _tensors(drawn))
    return made if isinstance(drawn, tuple) else made[0]


__all__ = ["GraphedStep", "StaticStep"]
