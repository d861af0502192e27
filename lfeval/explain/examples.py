"""Label-free example importance (Crabbé & van der Schaar 2022, §2.2): which training examples
explain the representation of a test example. Every method returns a (n_test, n_train) tensor,
higher = more important.

Latent-space methods (no labels, no loss): ``cosine``, ``dknn`` (the paper's 1/||h - h'||^2,
or a k-nearest-neighbour indicator), ``simplex`` (SimplEx convex weights). Loss-based methods use
the pretext loss of the full model (``encoder.pretext_model``) and gradients with respect to the
*encoder's* parameters only: ``tracin`` and ``influence``. Per-example gradients come from
torch.func (vmap over grad), in chunks; nothing loops over examples in Python.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from ..encoder import Encoder, check_model
from ..errors import InvalidArgument, InvalidInput
from ..memory import encode_chunks, feature_budget, rows_per_pass
from ..models.losses import ExampleLoss
from ..models.pretext import Contrastive, PretextModel
from ..precision import precise
from ..registry import Registry
from ..validation import (
    check_choice,
    check_eval_mode,
    check_inputs,
    check_module,
    check_number,
    check_positive_int,
    model_device,
    to_numpy,
)
from .base import QUANTUS_KEYS
from .ghost import GhostGradients


def _example_class(name: str, cls):
    """The registry's check: ``cls`` must be an :class:`ExampleImportance` subclass."""
    if not (isinstance(cls, type) and issubclass(cls, ExampleImportance)):
        raise InvalidArgument(f"register_example_method({name!r}) needs an ExampleImportance subclass, got {cls!r}.")
    return cls


#: method name -> ExampleImportance subclass (extend with :func:`register_example_method`)
EXAMPLE_METHODS = Registry("example-importance method", check=_example_class)
#: names of the registered methods: a live view of :data:`EXAMPLE_METHODS`
METHODS = EXAMPLE_METHODS.keys()


def register_example_method(name: str, cls: Optional[type] = None):
    """Make an :class:`ExampleImportance` subclass available as ``method=name`` and return it; without ``cls``, a
    class decorator."""
    return EXAMPLE_METHODS.register(name) if cls is None else EXAMPLE_METHODS.register(name, cls)


class ExampleImportance:
    """Base class: ``attribute(x_train, x_test) -> (n_test, n_train)`` on the encoder's device.

    Parameters
    ----------
    encoder : nn.Module
        f, in eval mode, ``(N, *input_shape) -> (N, d)``.
    batch_size : int
        Inputs per forward pass / per-example-gradient chunk.
    display_progressbar : bool
        Show tqdm bars on long loops.
    """

    def __init_subclass__(cls, **kwargs):
        """Every method's ``attribute`` runs at lfeval's precision (:mod:`lfeval.precision`: TF32 off by default)."""
        super().__init_subclass__(**kwargs)
        if "attribute" in vars(cls):
            cls.attribute = precise(vars(cls)["attribute"])

    def __init__(self, encoder: torch.nn.Module, batch_size: int = 256, display_progressbar: bool = True):
        self.encoder = check_module(encoder, "encoder")
        self.batch_size, self.display_progressbar = check_positive_int(batch_size, "batch_size"), display_progressbar
        self.device = model_device(encoder)

    def _inputs(self, x_train, x_test):
        self.encoder = enc = check_model(self.encoder, x_train, name="encoder")
        x_train = enc.canonical(check_inputs(x_train, enc, "x_train", device=self.device))
        x_test = enc.canonical(check_inputs(x_test, enc, "x_test", device=self.device))
        if x_train.shape[1:] != x_test.shape[1:]:
            raise InvalidInput(
                f"`x_train` examples have shape {tuple(x_train.shape[1:])} but `x_test` examples "
                f"{tuple(x_test.shape[1:])}; both must be inputs of the same encoder."
            )
        return x_train, x_test

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        return encode_chunks(self.encoder, x, self.batch_size)

    def attribute(self, x_train, x_test) -> torch.Tensor:
        raise NotImplementedError


@register_example_method("cosine")
class CosineSimilarity(ExampleImportance):
    """cos(f(x_test), f(x_train)): representation similarity."""

    def attribute(self, x_train, x_test):
        x_train, x_test = self._inputs(x_train, x_test)
        h_tr = torch.nn.functional.normalize(self.latents(x_train), dim=1)
        h_te = torch.nn.functional.normalize(self.latents(x_test), dim=1)
        return h_te @ h_tr.T


@register_example_method("dknn")
class DkNN(ExampleImportance):
    """Deep k-nearest neighbours in latent space (Papernot & McDaniel 2018), as in the paper §4.1.

    ``kind="inverse_distance"``: 1 / ||f(x_test) - f(x_train)||^2 (the paper's score).
    ``kind="knn"``: 1 for the k nearest training examples of each test example, else 0.
    """

    def __init__(self, encoder, kind: str = "inverse_distance", k: int = 10, eps: float = 1e-12, **kw):
        super().__init__(encoder, **kw)
        self.kind = check_choice(kind, ("inverse_distance", "knn"), "DkNN kind")
        self.k, self.eps = check_positive_int(k, "k"), check_number(eps, "eps", strict=True)

    def attribute(self, x_train, x_test):
        x_train, x_test = self._inputs(x_train, x_test)
        d2 = torch.cdist(self.latents(x_test), self.latents(x_train)).pow(2)
        if self.kind == "inverse_distance":
            return 1.0 / (d2 + self.eps)
        if not 1 <= self.k <= d2.shape[1]:
            raise InvalidArgument(f"`k` must be in [1, n_train={d2.shape[1]}], got {self.k}.")
        idx = torch.topk(-d2, self.k, dim=1).indices
        return torch.zeros_like(d2).scatter_(1, idx, 1.0)


@register_example_method("simplex")
class SimplEx(ExampleImportance):
    """SimplEx (Crabbé et al. 2021): convex weights w_i = softmax(v_i) with f(x_test) ~ sum_j w_ij f(x_train_j).

    All test points are fitted at once: V (n_test, n_train) minimises
    sum_i ||f(x_test_i) - softmax(V_i) H_train||^2 with Adam (``n_steps`` steps, as SimplEx's 1000).
    """

    def __init__(self, encoder, n_steps: int = 1000, lr: float = 0.1, seed: int = 0, **kw):
        super().__init__(encoder, **kw)
        self.n_steps, self.lr = check_positive_int(n_steps, "n_steps"), check_number(lr, "lr", strict=True)
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.loss_history = []

    def fit(self, h_train: torch.Tensor, h_test: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        pre = torch.randn(len(h_test), len(h_train), generator=gen).to(h_train.device, h_train.dtype)
        pre.requires_grad_(True)
        opt = torch.optim.Adam([pre], lr=self.lr)
        self.loss_history = []
        for _ in tqdm(range(self.n_steps), desc="SimplEx", disable=not self.display_progressbar, leave=False):
            opt.zero_grad()
            loss = (torch.softmax(pre, dim=1) @ h_train - h_test).pow(2).sum()
            loss.backward()
            opt.step()
            self.loss_history.append(loss.item())
        return torch.softmax(pre.detach(), dim=1)

    def attribute(self, x_train, x_test):
        x_train, x_test = self._inputs(x_train, x_test)
        with torch.enable_grad():
            return self.fit(self.latents(x_train), self.latents(x_test))


class _LossBased(ExampleImportance):
    """Shared machinery: per-example gradients of the pretext loss w.r.t. the encoder's parameters.

    Parameters
    ----------
    model : nn.Module, optional
        The full model (encoder + decoder/head) whose loss is differentiated; default
        ``encoder.pretext_model``. ``encoder`` must be a submodule of it.
    loss : callable, optional
        ``loss(forward, x, y, extra) -> (N,)`` per-example loss of a callable model; default the
        pretext task's deterministic ``example_loss`` (reconstruction error on clean inputs,
        cross-entropy for classification, SimCLR alignment with a fixed view).
    y_train, y_test : tensors, optional
        Labels, needed only by the classification pretext's loss.
    """

    def __init__(self, encoder, model=None, loss: Optional[Callable] = None, y_train=None, y_test=None,
                 chunk_size: int = 128, **kw):
        super().__init__(encoder, **kw)
        contract = encoder if isinstance(encoder, Encoder) else None
        if model is None and contract is not None:
            model = contract.pretext_model
        if model is None:
            raise InvalidArgument(
                f"{type(self).__name__} differentiates a loss: pass `model` (encoder + decoder/head) and `loss`, or "
                "use an encoder from lfeval.models.train_encoder, which carries its `pretext_model`."
            )
        check_eval_mode(model, "model")
        task = model.task if isinstance(model, PretextModel) else None
        if loss is None and contract is not None and contract.pretext_model is model:
            loss = contract.loss
        if loss is None and task is None:
            raise InvalidArgument(f"{type(self).__name__}: pass `loss(forward, x, y, extra) -> (N,)` for this model.")
        self.model, self.task = model, task
        self.loss = loss if loss is not None else task.example_loss
        net = contract.module if contract is not None else encoder
        prefix = next((n for n, m in model.named_modules() if m is net), None)
        if prefix is None:
            raise InvalidArgument("`encoder` must be a submodule of `model` (its parameters are differentiated).")
        self.prefix = f"{prefix}." if prefix else ""
        self.y_train, self.y_test, self.chunk_size = y_train, y_test, check_positive_int(chunk_size, "chunk_size")

    def _inputs(self, x_train, x_test):
        """As the base's, cast to the network's own dtype: the pretext model is called directly, not through the
        Encoder (a bfloat16 network takes bfloat16 inputs; scores are accumulated in float32 at least)."""
        x_train, x_test = super()._inputs(x_train, x_test)
        return self.encoder.network_input(x_train), self.encoder.network_input(x_test)

    def _labels(self, y, n: int, name: str):
        if y is None:
            if self.task is not None and self.task.needs_labels:
                raise InvalidArgument(f"The {self.task.name} pretext loss needs labels: pass `{name}`.")
            return torch.zeros(n, dtype=torch.long, device=self.device)
        y = torch.as_tensor(y, device=self.device).long()
        if len(y) != n:
            raise InvalidInput(f"`{name}` has {len(y)} labels for {n} examples.")
        return y

    def _split_params(self, state: Optional[dict] = None):
        """(encoder parameters to differentiate, everything else held fixed), optionally from a checkpoint."""
        values = dict(self.model.named_parameters())
        values.update(dict(self.model.named_buffers()))
        if state is not None:  # a checkpoint takes the model's device and dtype (a float64 copy, a GPU)
            values.update({k: v.to(values[k].device, values[k].dtype if v.is_floating_point() else v.dtype)
                           if k in values else v.to(self.device) for k, v in state.items()})
        theta = {k: v.detach() for k, v in values.items() if k.startswith(self.prefix) and
                 k in dict(self.model.named_parameters())}
        fixed = {k: v.detach() for k, v in values.items() if k not in theta}
        return theta, fixed

    def _per_example_loss(self, theta, fixed, x, y, extra):
        def forward(inp):
            return functional_call(self.model, {**theta, **fixed}, (inp,))

        return self.loss(forward, x.unsqueeze(0), y.unsqueeze(0),
                         None if extra is None else extra.unsqueeze(0))[0]

    def _extra(self, x):
        if self.task is not None:
            return self.task.example_extra(x)
        return self.loss.extra(x) if isinstance(self.loss, ExampleLoss) else None

    def _independent(self, theta, fixed, x, y, extra) -> bool:
        """Whether each example's loss depends on that example only (true of every lfeval pretext loss; a user's
        loss may couple a batch), checked on the few examples ``x``: their losses together and one by one."""
        def losses(i, j):
            with torch.no_grad():
                return self.loss(lambda inp: functional_call(self.model, {**theta, **fixed}, (inp,)), x[i:j], y[i:j],
                                 _rows(extra, i, j))

        together = losses(0, len(x))
        alone = torch.cat([losses(i, i + 1) for i in range(len(x))])
        return together.shape == alone.shape and torch.allclose(together, alone, rtol=1e-4, atol=1e-6)

    def per_example_grads(self, x, y, theta, fixed) -> torch.Tensor:
        """Flattened gradients (N, P) of each example's loss w.r.t. the encoder parameters."""
        extra = self._extra(x)
        g = vmap(grad(self._per_example_loss), in_dims=(None, None, 0, 0, None if extra is None else 0))
        out = []
        for i in range(0, len(x), self.chunk_size):
            e = None if extra is None else extra[i:i + self.chunk_size]
            grads = g(theta, fixed, x[i:i + self.chunk_size], y[i:i + self.chunk_size], e)
            out.append(torch.cat([grads[k].reshape(len(grads[k]), -1) for k in theta], dim=1))
        return torch.cat(out)


@register_example_method("tracin")
class TracIn(_LossBased):
    """TracIn (Pruthi et al. 2020): sum_c eta_c <grad L(x_train; theta_c), grad L(x_test; theta_c)>.

    ``checkpoints``: list of ``{"state_dict", "lr"}`` of the full model (default
    ``encoder.checkpoints``, kept by ``train_encoder(..., checkpoints=K)``).

    ``algorithm="factorised"`` (default) computes the inner products layer by layer from activations and
    output gradients (:mod:`lfeval.explain.ghost`): no per-example gradient of all P parameters is built,
    and memory grows with the layers' width, not with P. Linear layers, convolutions (Conv1d/Conv2d,
    groups=1) and affine normalisation layers are factorised; the parameters of any other layer (an
    LSTM's) are differentiated exactly with dense per-example gradients. It needs each example's loss to
    depend on that example only (true of every lfeval pretext loss). ``algorithm="dense"`` builds the
    (N, P) per-example gradients with torch.func (the reference).

    ``ghost``: "auto" (each layer's cheaper exact form), True or False (see :class:`GhostGradients`).
    ``projection=k``: TRAK-style random projection (about k numbers per large layer, seeded by ``seed``)
    of the layers that would be built as full per-example gradients, for very large models: an
    unbiased estimate, not exact. ``max_memory`` (bytes) bounds the test features kept at once; beyond
    it the test set is taken in blocks and the training features are recomputed for each block. By default
    it is :func:`lfeval.memory.feature_budget` of the model's device: 1 GiB on the CPU, a quarter of the free
    memory on a GPU (all 10,000 MNIST test digits in one block there; 2 blocks at 1 GiB).
    """

    def __init__(self, encoder, checkpoints=None, algorithm: str = "factorised", ghost="auto",
                 projection: Optional[int] = None, seed: int = 0, max_memory: Optional[int] = None, **kw):
        super().__init__(encoder, **kw)
        if checkpoints is None and isinstance(encoder, Encoder):
            checkpoints = encoder.checkpoints
        self.checkpoints = checkpoints
        if not self.checkpoints:
            raise InvalidArgument(
                "TracIn needs training checkpoints: train with lfeval.models.train_encoder(..., checkpoints=K) or "
                "pass checkpoints=[{'state_dict': ..., 'lr': ...}, ...]."
            )
        self.algorithm = check_choice(algorithm, ("factorised", "dense"), "TracIn algorithm")
        if ghost not in ("auto", True, False):
            raise InvalidArgument(f"TracIn `ghost` must be 'auto', True or False, got {ghost!r}.")
        self.ghost = ghost
        self.projection = None if projection is None else check_positive_int(projection, "projection")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.max_memory = None if max_memory is None else check_positive_int(max_memory, "max_memory")
        #: after attribute(): parameters differentiated densely, bytes of test features kept at once, the number
        #: of test blocks and each factorised layer's form ("ghost", "gradient" or "projected")
        self.dense_keys, self.feature_bytes, self.test_blocks, self.layer_forms = None, None, None, None

    def attribute(self, x_train, x_test):
        x_train, x_test = self._inputs(x_train, x_test)
        y_tr = self._labels(self.y_train, len(x_train), "y_train")
        y_te = self._labels(self.y_test, len(x_test), "y_test")
        scores = torch.zeros(len(x_test), len(x_train), device=self.device, dtype=self.encoder.data_dtype)
        step = self.chunk_size * 4  # bound memory: train examples in chunks
        ghost = None
        for ck in tqdm(self.checkpoints, desc="TracIn", disable=not self.display_progressbar, leave=False):
            theta, fixed = self._split_params(ck["state_dict"])
            lr = float(ck.get("lr", 1.0))
            if self.algorithm == "dense":
                g_te = self.per_example_grads(x_test, y_te, theta, fixed)
                for i in range(0, len(x_train), step):
                    g_tr = self.per_example_grads(x_train[i:i + step], y_tr[i:i + step], theta, fixed)
                    scores[:, i:i + len(g_tr)] += lr * (g_te @ g_tr.T)
                continue
            if ghost is None:
                ghost = GhostGradients(self.model, list(theta), self.loss, dense=self._dense_subset, ghost=self.ghost,
                                       projection=self.projection, seed=self.seed)
                self.dense_keys = ghost.dense_keys
                # per-example extras (the contrastive view) drawn per batch exactly as the dense path draws them
                e_te = self._extra(x_test)
                e_tr = self._extra(x_train[:step])
                if e_tr is not None:
                    e_tr = torch.cat([e_tr] + [self._extra(x_train[i:i + step]) for i in range(step, len(x_train),
                                                                                               step)])
                self._check_independent(theta, fixed, x_test[:3], y_te[:3], _rows(e_te, 0, 3))
                probe = ghost.features(theta, fixed, x_test[:1], y_te[:1], _rows(e_te, 0, 1))  # fixes the forms
                per_example = max(1, ghost.nbytes(probe))
                budget = feature_budget(self.device) if self.max_memory is None else self.max_memory
                chunk = max(1, min(step, budget // (4 * per_example)))  # examples per forward/backward
                block = max(chunk, budget // (2 * per_example))  # test examples whose features are kept
                self.feature_bytes = min(block, len(x_test)) * per_example
                self.test_blocks = -(-len(x_test) // block)
                self.layer_forms = {plan.name: plan.form for plan in ghost.layers}
            for b in range(0, len(x_test), block):  # more than one block only when the test features outgrow memory
                stop = min(b + block, len(x_test))
                parts = [(i, min(i + chunk, stop)) for i in range(b, stop, chunk)]
                f_te = _concat([ghost.features(theta, fixed, x_test[i:j], y_te[i:j], _rows(e_te, i, j))
                                for i, j in parts])
                for i in range(0, len(x_train), chunk):
                    f_tr = ghost.features(theta, fixed, x_train[i:i + chunk], y_tr[i:i + chunk],
                                          _rows(e_tr, i, i + chunk))
                    scores[b:stop, i:i + chunk] += lr * ghost.kernel(f_te, f_tr)
        return scores

    def _check_independent(self, theta, fixed, x, y, extra) -> None:
        """The factorisation reads every example's gradient off one backward pass of the summed loss, which
        needs each example's loss to depend on that example only: check it on a few examples."""
        if not self._independent(theta, fixed, x, y, extra):
            raise InvalidArgument(
                "TracIn's factorised algorithm needs each example's loss to depend on that example only, and this "
                "loss changes with the other examples of its batch; pass algorithm='dense'."
            )

    def _dense_subset(self, x, y, extra, theta, fixed):
        return self.per_example_grads(x, y, theta, fixed)


def _rows(t, i: int, j: int):
    return None if t is None else t[i:j]


def _concat(parts: list) -> dict:
    """Join the per-layer features of consecutive chunks of examples."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for name, (form, first) in parts[0].items():
        if isinstance(first, tuple):
            out[name] = (form, tuple(torch.cat([p[name][1][j] for p in parts]) for j in range(len(first))))
        else:
            out[name] = (form, torch.cat([p[name][1] for p in parts]))
    return out


@register_example_method("influence")
class InfluenceFunctions(_LossBased):
    """Influence functions (Koh & Liang 2017) for the pretext loss, w.r.t. encoder parameters.

    Koh & Liang's I_up,loss(z, z_test) = -grad L(z_test)^T H^-1 grad L(z) is the change of the
    test loss when z is up-weighted; negative = helpful. lfxai returns this quantity up to sign
    conventions of its LiSSA loop; lfeval returns **importance = -I_up,loss = grad L(z_test)^T
    H^-1 grad L(z)**, so that *higher = more helpful*, the direction every example method here shares.

    H is the Hessian of the mean training loss over ``x_train``, damped: H + damping * I.

    ``solver="exact"`` builds H from P Hessian-vector products and solves it with a Cholesky
    factorisation; it is used when the number of differentiated parameters is <= ``max_exact``.
    ``solver="lissa"`` is the stochastic LiSSA recursion of the paper's code (depth, scale,
    damping), run on all test vectors at once. ``params``: "all" (every encoder parameter) or
    "last" (the encoder's last layer, as Koh & Liang do for large networks); "auto" = "all" when
    that is small enough for the exact solve, else "last".

    Memory beyond the (n, P) gradients and the (n_test, n_train) scores does not grow with the training set:
    gradients and the last layer's latent Hessians take ``chunk_size`` examples at a time, and the exact
    Hessian of the mean loss sums blocks of examples sized by :func:`lfeval.memory.rows_per_pass` (when each
    example's loss depends on that example only).
    """

    def __init__(self, encoder, solver: str = "exact", params: str = "auto", damping: float = 1e-3,
                 max_exact: int = 5000, scale: float = 1000.0, depth: int = 100, lissa_batch: int = 64,
                 seed: int = 0, **kw):
        super().__init__(encoder, **kw)
        self.solver = check_choice(solver, ("exact", "lissa"), "influence solver")
        self.params = check_choice(params, ("auto", "all", "last"), "influence params")
        self.damping = check_number(damping, "damping")
        self.max_exact, self.depth = check_positive_int(max_exact, "max_exact"), check_positive_int(depth, "depth")
        self.scale = check_number(scale, "scale", strict=True)
        self.lissa_batch = check_positive_int(lissa_batch, "lissa_batch")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        #: after attribute(): the blocks of training examples the exact Hessian was summed over (None when the
        #: last layer's latent shortcut built it, or with LiSSA)
        self.hessian_blocks = None

    def _select(self, theta: dict) -> list:
        if self.params == "all" or (self.params == "auto" and sum(v.numel() for v in theta.values()) <= self.max_exact):
            return list(theta)
        last_module = list(theta)[-1].rsplit(".", 1)[0]  # parameters are registered in forward order
        return [k for k in theta if k.rsplit(".", 1)[0] == last_module]

    def _mean_loss_fn(self, theta_sel, fixed, x, y, extra):
        """The mean training loss as a function of the flattened selected parameters."""
        def total(flat):
            params, offset = {}, 0
            for k, v in theta_sel.items():
                params[k] = flat[offset:offset + v.numel()].view_as(v)
                offset += v.numel()
            return self.loss(lambda inp: functional_call(self.model, {**params, **fixed}, (inp,)), x, y, extra).mean()

        return total

    def attribute(self, x_train, x_test):
        x_train, x_test = self._inputs(x_train, x_test)
        y_tr = self._labels(self.y_train, len(x_train), "y_train")
        y_te = self._labels(self.y_test, len(x_test), "y_test")
        theta, fixed = self._split_params()
        keys = self._select(theta)
        sel = {k: theta[k] for k in keys}
        rest = {k: v for k, v in theta.items() if k not in sel}
        fixed_all = {**fixed, **rest}
        dtype = self.encoder.data_dtype  # the solve in float32 at least
        g_tr = self.per_example_grads(x_train, y_tr, sel, fixed_all).to(dtype)
        g_te = self.per_example_grads(x_test, y_te, sel, fixed_all).to(dtype)
        flat0 = torch.cat([v.reshape(-1) for v in sel.values()])
        if self.solver == "exact":
            if len(flat0) > self.max_exact:
                raise InvalidArgument(
                    f"The exact solve would build a {len(flat0)}x{len(flat0)} Hessian (> max_exact={self.max_exact}); "
                    "use params='last' or solver='lissa'."
                )
            hess = self._linear_latent_hessian(keys, x_train, y_tr)
            if hess is None:
                hess = self._hessian(sel, fixed_all, x_train, y_tr, self._extra(x_train), flat0)
            hess = hess.to(dtype)
            hess = 0.5 * (hess + hess.T) + self.damping * torch.eye(len(flat0), device=hess.device, dtype=hess.dtype)
            solved, info = torch.linalg.solve_ex(hess, g_te.T)  # H^-1 grad L(z_test), (P, n_test)
            if int(info) != 0 or not bool(torch.isfinite(solved).all()):
                raise InvalidArgument(
                    f"The damped Hessian H + damping * I ({len(flat0)}x{len(flat0)}) is singular with "
                    f"damping={self.damping:g}, so H^-1 does not exist; pass a positive `damping`, e.g. damping=1e-3 "
                    "(the default) or larger, or solver='lissa'."
                )
        else:
            solved = self._lissa(sel, fixed_all, x_train, y_tr, flat0, g_te.T)
        self.n_params = len(flat0)
        return (g_tr @ solved).T  # (n_test, n_train)

    def _linear_latent_hessian(self, keys: list, x, y):
        """Exact Hessian when the differentiated parameters are the encoder's last nn.Linear (z = W h + b).

        z is linear in (W, b), so H = (1/n) sum_i J_i^T H_z,i J_i with J_i = [h_i, 1] (x) I_d and H_z,i the
        d x d Hessian of example i's loss in its latent: d Hessian-vector products per example instead
        of P over the whole set. Needs a model ``head(encoder(x))`` whose loss calls it once; returns
        None otherwise (the caller then builds H from P Hessian-vector products).
        """
        name = keys[0].rsplit(".", 1)[0]
        layer = dict(self.model.named_modules()).get(name)
        if (not isinstance(self.model, PretextModel) or isinstance(self.task, Contrastive) or self.loss !=
                self.task.example_loss or not isinstance(layer, torch.nn.Linear) or
                sorted(keys) != sorted([f"{name}.weight", f"{name}.bias"]) or keys[0] != f"{name}.weight"):
            return None
        captured = []
        handle = layer.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
        try:
            z = self.latents(x).to(self.encoder.input_dtype)  # the head's dtype (latents come out float32 at least)
        finally:
            handle.remove()
        h = torch.cat(captured).to(z.dtype)  # a layer input captured under bfloat16 autocast is bfloat16
        head = self.model.head
        # the head's weights as constants: called with its parameters, every chunk's Hessians would carry the
        # double-backward graph to them (decoder activations, ~1.5 MB per MNIST digit), all of them kept until the
        # end (not no_grad: torch's CPU LSTM takes its inference kernel there, whose backward fails)
        weights = {k: v.detach() for k, v in [*head.named_parameters(), *head.named_buffers()]}

        def loss_z(zi, xi, yi):
            return self.loss(lambda inp: functional_call(head, weights, (zi.unsqueeze(0),)), xi.unsqueeze(0),
                             yi.unsqueeze(0), None)[0]

        h1 = torch.cat([h, torch.ones(len(h), 1, device=h.device, dtype=h.dtype)], dim=1)  # (n, k + 1)
        d, k1 = z.shape[1], h1.shape[1]
        blocks = torch.zeros(d, k1, d, k1, device=h.device, dtype=h.dtype)
        for i in range(0, len(x), self.chunk_size):
            hz = vmap(_hessian_rev(loss_z))(z[i:i + self.chunk_size], x[i:i + self.chunk_size],
                                            y[i:i + self.chunk_size]).to(h.dtype)  # (c, d, d)
            rows = h1[i:i + self.chunk_size]
            blocks += torch.einsum("iab,ij,il->ajbl", hz, rows, rows)
        blocks /= len(x)  # (d, k+1, d, k+1)
        a_idx = torch.arange(d, device=h.device)[:, None]
        j_idx = torch.arange(k1, device=h.device)[None, :]
        flat = torch.where(j_idx < k1 - 1, a_idx * (k1 - 1) + j_idx, d * (k1 - 1) + a_idx).reshape(-1)
        hess = torch.empty(d * k1, d * k1, device=h.device, dtype=blocks.dtype)
        hess[flat[:, None], flat[None, :]] = blocks.reshape(d * k1, d * k1)
        return hess

    def _hessian(self, sel, fixed, x, y, extra, flat0, columns: int = 32) -> torch.Tensor:
        """Exact Hessian (P, P) of the mean training loss from Hessian-vector products with the basis, ``columns``
        at a time. When each example's loss depends on that example only, the mean is taken over blocks of
        examples, H = sum_b (n_b / n) H_b, so memory holds one block's graph (``columns`` copies of its
        activations) instead of the training set's; a loss that couples a batch's examples is taken whole."""
        n, p = len(x), len(flat0)
        rows = rows_per_pass(x[0].numel(), n, per_row=columns, device=x.device)
        if rows < n and not self._independent(sel, fixed, x[:3], y[:3], _rows(extra, 0, 3)):
            rows = n
        eye = torch.eye(p, device=flat0.device, dtype=flat0.dtype)
        blocks = [(i, min(i + rows, n)) for i in range(0, n, rows)]
        self.hessian_blocks = len(blocks)
        bar = tqdm(total=len(blocks) * -(-p // columns), desc="Hessian", leave=False,
                   disable=not self.display_progressbar)
        hess = torch.zeros(p, p, device=flat0.device, dtype=flat0.dtype)
        for i, j in blocks:
            hvp = vmap(_hvp_fn(self._mean_loss_fn(sel, fixed, x[i:j], y[i:j], _rows(extra, i, j)), flat0))
            for c in range(0, p, columns):
                hess[c:c + columns] += hvp(eye[c:c + columns]).detach() * ((j - i) / n)
                bar.update()
        bar.close()
        return hess

    def _lissa(self, sel, fixed, x, y, flat0, v):
        """LiSSA (Agarwal et al. 2017): h <- v + (1 - damping) h - H_batch h / scale, for all columns of v.

        As in the paper's code, the fixed point h / scale is (H + scale * damping * I)^-1 v.
        """
        gen = torch.Generator().manual_seed(self.seed)
        extra = self._extra(x)
        h = v.clone()
        for _ in tqdm(range(self.depth), desc="LiSSA", disable=not self.display_progressbar, leave=False):
            idx = torch.randint(len(x), (min(self.lissa_batch, len(x)),), generator=gen).to(self.device)
            total = self._mean_loss_fn(sel, fixed, x[idx], y[idx], None if extra is None else extra[idx])
            hvp = vmap(_hvp_fn(total, flat0), in_dims=1, out_dims=1)(h.to(flat0.dtype)).to(h.dtype)
            h = v + (1 - self.damping) * h - hvp / self.scale
        return h / self.scale


def _hessian_rev(fn):
    """``torch.func.hessian`` by reverse-over-reverse: forward-mode AD is not implemented for every layer
    (torch's CPU LSTM kernel refuses it), double backward is."""
    return torch.func.jacrev(torch.func.jacrev(fn))


def _hvp_fn(total, flat0):
    """v -> H v for the Hessian H of ``total`` at ``flat0``: the vector-Jacobian product of its gradient (H is
    symmetric), reverse-over-reverse like :func:`_hessian_rev`; the gradient's graph is built once."""
    _, vjp = torch.func.vjp(torch.func.grad(total), flat0)
    return lambda v: vjp(v)[0]


#: methods that differentiate a pretext loss (need the full model, a loss and, for TracIn, checkpoints)
LOSS_BASED = tuple(name for name, cls in EXAMPLE_METHODS.items() if issubclass(cls, _LossBased))


def importance(encoder, x_train, x_test, method: str = "cosine", **kwargs) -> torch.Tensor:
    """Example importance of each training example for each test example: (n_test, n_train).

    Parameters
    ----------
    encoder : nn.Module
        The encoder f (eval mode).
    x_train, x_test : arrays or tensors, ``(n, *input_shape)``
    method : {"cosine", "dknn", "simplex", "tracin", "influence"}
    **kwargs
        Options of the method's class (:class:`DkNN`, :class:`SimplEx`, :class:`TracIn`,
        :class:`InfluenceFunctions`); loss-based methods take ``model``, ``loss``, ``y_train``,
        ``y_test`` and default to the encoder's pretext model and loss.
    """
    return EXAMPLE_METHODS.get(method)(encoder, **kwargs).attribute(x_train, x_test)


def explain_func(model, inputs, targets=None, method: str = "cosine", x_train=None, **kwargs) -> np.ndarray:
    """Quantus-style explain function: the (n, n_train) importance matrix of ``inputs`` as NumPy.

    Bind the training examples: ``functools.partial(explain_func, x_train=x_train)``.
    """
    if x_train is None:
        raise InvalidArgument("Example importance needs the training examples: pass `x_train`.")
    for key in QUANTUS_KEYS:
        kwargs.pop(key, None)
    return to_numpy(importance(model, x_train, inputs, method=method, **kwargs))


__all__ = ["EXAMPLE_METHODS", "METHODS", "LOSS_BASED", "register_example_method", "ExampleImportance",
           "CosineSimilarity", "DkNN", "SimplEx", "TracIn", "InfluenceFunctions", "importance", "explain_func"]
