"""Inner products of per-example gradients, layer by layer, without building any per-example gradient
of all P parameters (the "ghost" trick; Goodfellow 2015, Li et al. 2022, Bu et al. 2022).

For a linear map y_s = W a_s + b applied at positions s (one for a Linear on a vector, every patch of a
convolution, every use of a shared layer), example i's gradient is G_i = sum_s delta_is [a_is, 1]^T with
delta_is = dL_i / dy_is. Hence

    <G_i, G_j> = sum_{s,t} (a_is . a_jt + 1)(delta_is . delta_jt)                          (*)

Each layer takes the cheaper of two exact forms, from its sizes (S positions, k inputs, m outputs):

* ``ghost``: (*) from the activations a (N, S, k+1) and output gradients delta (N, S, m): S^2 (k + m) per
  pair of examples, memory O(N S (k + m)), the layer's width;
* ``gradient``: the layer's own per-example gradient G_i (k+1) x m, built as delta^T a in one batched
  product: k m per pair (convolutions on large maps, where S^2 is large and the kernel small).

Activations come from forward hooks; all output gradients delta of a batch from one backward pass of the
summed per-example loss (the examples are independent, so d(sum_j L_j)/dy_i = dL_i/dy_i). Normalisation
layers (BatchNorm in eval mode, LayerNorm, GroupNorm) have per-example gradients of the width's size,
sum_s delta x_hat and sum_s delta, built exactly. Parameters of any other layer (an LSTM, a parameter
used outside a module) fall back to exact dense per-example gradients (torch.func vmap) for those
parameters only.

``projection=k`` (TRAK-style, Park et al. 2023) replaces the layers that would be built as ``gradient``
with a random Kronecker projection R_d G_i R_a^T (Gaussian, E[<.,.>] exact; LoGra, Choe et al. 2024), of
about k numbers per example and layer.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import InvalidArgument

#: block size of the (test x positions) x (train x positions) products of ghost layers (floats)
_BLOCK = 2 ** 24


def _conv_ok(mod) -> bool:
    return (mod.groups == 1 and mod.padding_mode == "zeros" and not isinstance(mod.padding, str)
            and isinstance(mod, (nn.Conv1d, nn.Conv2d)))


def _norm_ok(mod) -> bool:
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return mod.affine and mod.track_running_stats and mod.running_mean is not None and not mod.training
    if isinstance(mod, nn.GroupNorm):
        return mod.affine
    if isinstance(mod, nn.LayerNorm):
        return mod.elementwise_affine
    return False


def _kind(mod) -> Optional[str]:
    """How a layer's per-example gradient is factorised: "linear" (Linear and convolutions), "norm", or None."""
    if isinstance(mod, nn.Linear) or (isinstance(mod, nn.modules.conv._ConvNd) and _conv_ok(mod)):
        return "linear"
    if _norm_ok(mod):
        return "norm"
    return None


class LayerPlan:
    """One differentiated layer: its parameter names and, once seen, the form (ghost / gradient / projected)."""

    def __init__(self, name: str, module: nn.Module, kind: str, keys: list):
        self.name, self.module, self.kind, self.keys = name, module, kind, keys
        self.form = None if kind == "linear" else "gradient"
        self.projectors = None


class GhostGradients:
    """Per-example gradient features of a model's parameters ``keys`` and their inner products.

    Parameters
    ----------
    model : nn.Module
        The full model (in eval mode); the parameters named in ``keys`` are differentiated.
    keys : list of str
        Names (in ``model.named_parameters()``) of the differentiated parameters.
    loss : callable
        ``loss(forward, x, y, extra) -> (N,)``, each example's loss depending on that example only.
    dense : callable
        ``dense(x, y, extra, keys, theta, fixed) -> (N, P_keys)``: exact per-example gradients of the
        parameters no layer rule covers.
    ghost : "auto", True or False
        "auto": per layer, the cheaper exact form; True: every Linear/convolution in ghost form; False: every
        one as its per-example gradient.
    projection : int, optional
        Random Kronecker projection of the layers built as gradients to about this many numbers each.
    seed : int
        Seed of the projections.
    """

    def __init__(self, model: nn.Module, keys: list, loss: Callable, dense: Callable, ghost="auto",
                 projection: Optional[int] = None, seed: int = 0):
        if ghost not in ("auto", True, False):
            raise InvalidArgument(f"`ghost` must be 'auto', True or False, got {ghost!r}.")
        self.model, self.loss, self.dense, self.ghost = model, loss, dense, ghost
        self.projection, self.seed = projection, seed
        keyset = set(keys)
        owners = {}
        for name, mod in model.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                owners.setdefault(id(p), []).append(name)
        self.layers, covered = [], set()
        for name, mod in model.named_modules():
            own = [f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False)]
            if not own or not set(own) <= keyset:
                continue
            kind = _kind(mod)
            shared = any(len(owners[id(p)]) > 1 for p in mod.parameters(recurse=False))  # tied weights
            if kind is not None and not shared:
                self.layers.append(LayerPlan(name, mod, kind, own))
                covered.update(own)
        #: parameters differentiated densely (no factorisation rule applies): e.g. an LSTM's
        self.dense_keys = [k for k in keys if k not in covered]

    # ------------------------------------------------------------------ features of a batch
    def features(self, theta: dict, fixed: dict, x, y, extra) -> dict:
        """Per-layer features of the examples ``x`` at parameters ``theta`` (+ ``fixed``)."""
        taps = {plan.name: [] for plan in self.layers}
        plans = {plan.module: plan for plan in self.layers}

        def hook(mod, inputs, out):
            plan = plans[mod]
            a = inputs[0].detach()
            if plan.kind == "norm":
                a = _normalised(mod, a)
            taps[plan.name].append((a, out))
            return out.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the tapped output

        params = {k: v.detach().requires_grad_(k in self._tapped_keys()) for k, v in theta.items()}
        handles = [plan.module.register_forward_hook(hook) for plan in self.layers]
        try:
            with torch.enable_grad():
                losses = self.loss(lambda inp: functional_call(self.model, {**params, **fixed}, (inp,)), x, y, extra)
                outs = [o for plan in self.layers for _, o in taps[plan.name]]
                grads = torch.autograd.grad(losses.sum(), outs, allow_unused=True) if outs else []
        finally:
            for h in handles:
                h.remove()
        feats, i = {}, 0
        n = len(x)
        for plan in self.layers:
            uses = []
            for a, o in taps[plan.name]:
                d = grads[i] if grads[i] is not None else torch.zeros_like(o)
                uses.append((a, d.detach()))
                i += 1
            if not uses:  # the layer does not take part in the loss
                feats[plan.name] = ("gradient", torch.zeros(n, 1, device=x.device))
                continue
            feats[plan.name] = self._layer_features(plan, uses, n)
        if self.dense_keys:
            rest = {k: v for k, v in theta.items() if k not in self.dense_keys}
            sub = {k: theta[k] for k in self.dense_keys}
            feats["<dense>"] = ("gradient", self.dense(x, y, extra, sub, {**fixed, **rest}))
        return feats

    def _tapped_keys(self):
        if not hasattr(self, "_tapped"):
            self._tapped = {k for plan in self.layers for k in plan.keys}
        return self._tapped

    def _layer_features(self, plan: LayerPlan, uses: list, n: int):
        mod = plan.module
        if plan.kind == "norm":  # per-example gradients of the affine weight and bias: sum_s delta x_hat, sum_s delta
            w = sum(_channel_sum(mod, d * a) for a, d in uses)
            b = sum(_channel_sum(mod, d) for a, d in uses)
            return "gradient", torch.cat([w, b], 1) if mod.bias is not None else w
        acts, deltas = zip(*[_positions(mod, a, d, n) for a, d in uses])
        a = acts[0] if len(acts) == 1 else torch.cat(acts, 1)  # (N, S, k): the uses are more positions
        d = deltas[0] if len(deltas) == 1 else torch.cat(deltas, 1)  # (N, S, m)
        bias = mod.bias is not None
        if plan.form is None:
            plan.form = self._choose(plan, a.shape[1], a.shape[2] + bias, d.shape[2])
            if plan.form == "projected":
                plan.projectors = _projectors(a.shape[2], d.shape[2], self.projection, self.seed, plan.name, a.device)
        if plan.form == "ghost":
            return ("ghost-bias" if bias else "ghost"), (a, d)
        d_sum = d.sum(1) if bias else None  # the bias's per-example gradient, sum_s delta_is
        if plan.form == "projected":  # R_d^T G_i R_a = sum_s (R_d^T delta_is)(R_a^T a_is)^T
            ra, rd = plan.projectors
            a, d, d_sum = a @ ra, d @ rd, None if d_sum is None else d_sum @ rd
        g = torch.bmm(d.transpose(1, 2), a).reshape(n, -1)  # (N, m k): sum_s delta_is a_is^T
        return ("gradient", g) if d_sum is None else ("gradient+bias", (g, d_sum))

    def _choose(self, plan: LayerPlan, s: int, k: int, m: int) -> str:
        """The layer's form: ghost when it costs less per pair of examples than the gradient (S^2 (k + m) vs
        k m), or costs at most twice as much and needs a quarter of the memory (S (k + m) vs k m); else the
        projected gradient (with ``projection``) or the exact one."""
        if self.ghost != "auto":
            return "ghost" if self.ghost else "gradient"
        ghost_cost, gradient_cost, ghost_memory = s * s * (k + m), k * m, s * (k + m)
        if ghost_cost < gradient_cost:
            return "ghost"
        if self.projection is not None and k * m > self.projection:
            return "projected"
        if ghost_cost < 2 * gradient_cost and 4 * ghost_memory < gradient_cost:
            return "ghost"
        return "gradient"

    # ------------------------------------------------------------------ inner products
    @staticmethod
    def nbytes(features: dict) -> int:
        """Memory held by features from :meth:`features`."""
        return sum(t.numel() * t.element_size() for form, f in features.values()
                   for t in ((f,) if form == "gradient" else f))

    @staticmethod
    def kernel(test: dict, train: dict) -> torch.Tensor:
        """(n_test, n_train): sum over layers of <g_test, g_train> for features from :meth:`features`."""
        out = None
        for name, (form, f_te) in test.items():
            f_tr = train[name][1]
            if form == "gradient":
                k = f_te @ f_tr.T
            elif form == "gradient+bias":
                k = torch.addmm(f_te[1] @ f_tr[1].T, f_te[0], f_tr[0].T)
            else:
                k = _ghost_kernel(f_te, f_tr, bias=form == "ghost-bias")
            out = k if out is None else out + k
        return out


def _ghost_kernel(te, tr, bias: bool) -> torch.Tensor:
    """(*) for all pairs: sum_{s,t} (a_is . a_jt [+ 1])(d_is . d_jt), in blocks of test rows."""
    (a_te, d_te), (a_tr, d_tr) = te, tr
    n_te, s = a_te.shape[:2]
    n_tr, t = a_tr.shape[:2]
    if s == 1 and t == 1:
        aa = a_te[:, 0] @ a_tr[:, 0].T
        return (aa.add_(1) if bias else aa).mul_(d_te[:, 0] @ d_tr[:, 0].T)
    a_tr2, d_tr2 = a_tr.reshape(n_tr * t, -1).T, d_tr.reshape(n_tr * t, -1).T
    rows = max(1, _BLOCK // max(1, s * n_tr * t))
    out = []
    for i in range(0, n_te, rows):
        aa = a_te[i:i + rows].reshape(-1, a_te.shape[2]) @ a_tr2
        if bias:
            aa.add_(1)
        dd = d_te[i:i + rows].reshape(-1, d_te.shape[2]) @ d_tr2
        out.append(aa.mul_(dd).reshape(-1, s, n_tr, t).sum((1, 3)))
    return torch.cat(out)


def _positions(mod, a, d, n):
    """(activations (N, S, k), output gradients (N, S, m)) at the S positions the weight is applied to."""
    if isinstance(mod, nn.Linear):
        a, d = a.reshape(n, -1, a.shape[-1]), d.reshape(n, -1, d.shape[-1])
    else:
        if isinstance(mod, nn.Conv1d):  # as a 2-D convolution of height 1
            a, d = a.unsqueeze(2), d.unsqueeze(2)
            kernel, dilation = (1, mod.kernel_size[0]), (1, mod.dilation[0])
            padding, stride = (0, mod.padding[0]), (1, mod.stride[0])
        else:
            kernel, dilation, padding, stride = mod.kernel_size, mod.dilation, mod.padding, mod.stride
        a = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride).transpose(1, 2)
        d = d.reshape(n, d.shape[1], -1).transpose(1, 2)
    return a, d


def _normalised(mod, a):
    """x_hat of a normalisation layer (per example: BatchNorm in eval mode uses its running statistics)."""
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        shape = (1, -1) + (1,) * (a.dim() - 2)
        return (a - mod.running_mean.view(shape)) / torch.sqrt(mod.running_var.view(shape) + mod.eps)
    if isinstance(mod, nn.GroupNorm):
        return F.group_norm(a, mod.num_groups, eps=mod.eps)
    return F.layer_norm(a, mod.normalized_shape, eps=mod.eps)


def _channel_sum(mod, t):
    """Sum over the positions an affine normalisation parameter is shared by: (N, its size)."""
    n = t.shape[0]
    if isinstance(mod, nn.LayerNorm):
        return t.reshape(n, -1, math.prod(mod.normalized_shape)).sum(1)
    return t.reshape(n, t.shape[1], -1).sum(2)


def _projectors(k: int, m: int, size: int, seed: int, name: str, device):
    """Gaussian R_a (k, r_a), R_d (m, r_d) with r_a r_d ~ size, scaled so that E[<R G, R H>] = <G, H>."""
    r_a = max(1, min(k, round(math.sqrt(size * k / m))))
    r_d = max(1, min(m, math.ceil(size / r_a)))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + sum(ord(c) * 31 ** i for i, c in enumerate(name)) % 2**31)
    ra = torch.randn(k, r_a, generator=gen) / math.sqrt(r_a)
    rd = torch.randn(m, r_d, generator=gen) / math.sqrt(r_d)
    return ra.to(device), rd.to(device)
