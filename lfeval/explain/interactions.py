"""Two-sided interaction attributions of a pair similarity: integrated Jacobians (Moeller et al., EMNLP 2023,
"An Attribution Method for Siamese Encoders", the xsbert package), for any encoder and modality.

**Maths.** With baselines r_a, r_b and the integrated Jacobian J̄(x) = ∫_0^1 ∂f/∂x (r + α(x − r)) dα (d × F),
the fundamental theorem of calculus gives f(x) − f(r) = J̄(x)(x − r), hence

    (f(a) − f(r_a))·(f(b) − f(r_b)) = Σ_ij (a − r_a)_i [J̄_aᵀ J̄_b]_ij (b − r_b)_j,

so A_ij = (a − r_a)_i [J̄_aᵀ J̄_b]_ij (b − r_b)_j sums to s(a, b) − s(r_a, b) − s(a, r_b) + s(r_a, r_b) for the
dot product s. The integral is a quadrature over ``n_steps`` points (captum's rules: ``"gausslegendre"``, the
default, or ``"riemann_right"`` (xsbert's), ``"riemann_trapezoid"``, ...), so the sum holds up to the
**completeness error** ``|ΣA − (s(a, b) − s(r_a, b) − s(a, r_b) + s(r_a, r_b))|``, returned in absolute terms (the
latents' units; divide by ``|s(a, b)|`` for a relative error). It is zero (to rounding) for any ``n_steps`` on a
linear encoder, whose Jacobian is constant, and falls as ``n_steps`` grows on a nonlinear one.

``similarity="cosine"`` uses the normalised encoder ``f̂ = f/|f|`` (:func:`lfeval.explain.pairs.normalised_encoder`):
the identity then holds exactly for the normalised latents, s = cos(f(a), f(b)). (xsbert instead divides the dot
product's matrix by ``|f(a)| |f(b)|``, an approximation.)

**Memory.** The F_a × F_b feature matrix is never formed. Features are summed into the modality's masking units
first (``units=True``, the default: pixels with their channels summed, time steps, table entries; for text, tokens
with their embedding dimensions summed, differentiated through the modality's attribution space, the input
embeddings, as :class:`lfeval.explain.base.FeatureExplainer` does):

    U_a = [Σ_{i∈u} (a − r_a)_i J̄_a[:, i]]_u   (d × units_a),   A = U_aᵀ U_b   (units_a × units_b).

Memory grows with d × units (and with the chunk's pairs × steps × features of one pass), not with features².
``units=False`` returns the feature matrix (N, F_a, F_b) of continuous inputs (for small inputs and tests).

**Computation.** U is computed batched over pairs and quadrature points, one of two ways (``mode="auto"`` picks
the cheaper, the fewer passes):

- ``"vjp"``: d vector-Jacobian products with a batched one-hot (``torch.autograd.grad(..., is_grads_batched=True)``)
  give J̄ (d × F) for every point at once; cost ∝ d;
- ``"jvp"``: one Jacobian-vector product per unit, with the tangent (x − r) restricted to the unit
  (``torch.func.jvp``): U[:, u] = J̄ v_u directly; cost ∝ units that differ from the baseline (tokens of a
  sentence, rather than MiniLM's 384 latent dimensions). Attention runs on PyTorch's math kernel there (the fused
  CPU kernel has no forward-mode derivative); a module without forward-mode support falls back to ``"vjp"``.

Pairs, points and directions are chunked by :func:`lfeval.memory.rows_per_pass` (and
:func:`lfeval.memory.run_in_chunks` halves the pairs on a CUDA out-of-memory error), on the encoder's device and
in its dtype (a float64 encoder computes in float64).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3, bias=False)).eval()
>>> a, b = torch.rand(2, 1, 4), torch.rand(2, 1, 4)
>>> A, err = interactions(net, a, b, n_steps=2, units=False, return_error=True)
>>> W = net[1].weight.detach()
>>> closed = a[:, 0, :, None] * (W.T @ W) * b[:, 0, None, :]          # diag(a) WᵀW diag(b), zero baselines
>>> bool(torch.allclose(torch.as_tensor(A), closed, atol=1e-6)), bool((err < 1e-5).all())
(True, True)
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, approximation_parameters
from tqdm.auto import tqdm

from ..errors import InvalidArgument
from ..memory import pass_budget, rows_per_pass, run_in_chunks
from ..modalities.text import unpack
from ..precision import precise
from ..validation import check_choice, check_positive_int
from .pairs import SIMILARITIES, pair_inputs, similarity_encoder

#: how the integrated Jacobians are computed (module docstring)
MODES = ("auto", "vjp", "jvp")
#: the quadrature rules (captum's)
QUADRATURES = tuple(SUPPORTED_METHODS)
DEFAULT_STEPS = 32


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple:
    """``(alphas, weights)`` of ``method`` over ``n_steps`` points on [0, 1] (the weights sum to 1)."""
    method = check_choice(method, QUADRATURES, "method")
    n_steps = check_positive_int(n_steps, "n_steps", minimum=1 if method == "gausslegendre" else 2)
    step_sizes, alphas = approximation_parameters(method)
    return list(alphas(n_steps)), list(step_sizes(n_steps))


class _Side:
    """One side of a chunk of pairs, ready to differentiate: the point x and its baseline r in the differentiable
    space (inputs, or a text encoder's input embeddings), the forward pass f(points, rows) and the unit of
    every feature."""

    def __init__(self, encoder, x: torch.Tensor, baseline, units: bool):
        space = encoder.modality.attribution_space(encoder)
        base = encoder.baseline_for(x, baseline)
        if space is not None:  # text: the input embeddings, the baseline tokens' embeddings under x's own mask
            module = space.module
            vocab = len(module.vocabulary)
            ids, mask = unpack(x, vocab)
            base_ids, _ = unpack(base, vocab, name="baseline")
            with torch.no_grad():
                self.x, self.r = module.embed(ids), module.embed(base_ids)
            if not units:
                raise InvalidArgument("`units=False` is not available for text: its features are tokens (the "
                                      "embedding entries are not inputs). Use units=True for tokens x tokens.")
            n_tok, width = self.x.shape[1:]
            self.unit_index = torch.arange(n_tok, device=x.device).view(n_tok, 1).expand(n_tok, width)
            self.n_units = n_tok
            self.forward = lambda p, rows: module.forward_embeddings(p, mask[rows])
        else:
            self.x, self.r = x, base
            shape = tuple(x.shape[1:])
            unit_shape = encoder.modality.unit_shape(shape) if units else shape
            self.n_units = math.prod(unit_shape)
            self.unit_index = torch.arange(self.n_units, device=x.device).view(unit_shape).expand(shape)
            self.forward = lambda p, rows: encoder(p)
        self.unit_index = self.unit_index.reshape(-1)

    def latents(self) -> tuple:
        """f(x), f(r) in the differentiable space (text: the reference under x's own attention mask)."""
        rows = torch.arange(len(self.x), device=self.x.device)
        with torch.no_grad():
            return self.forward(self.x, rows), self.forward(self.r, rows)


def _math_attention():
    """PyTorch's math attention kernel (forward-mode AD exists there, not in the fused CPU kernel)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: one kernel
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def _active_units(side: _Side) -> torch.Tensor:
    """Units where some input of the chunk differs from its baseline (the others have zero U)."""
    n = len(side.x)
    moved = ((side.x - side.r).reshape(n, -1) != 0).to(side.x.dtype)
    per_unit = torch.zeros(n, side.n_units, dtype=moved.dtype, device=moved.device).index_add_(1, side.unit_index,
                                                                                                moved)
    return per_unit.any(0).nonzero().flatten()


def _points(side: _Side, alphas: torch.Tensor) -> torch.Tensor:
    """The quadrature points r + α(x − r): (n, K, F)."""
    n = len(side.x)
    x, r = side.x.reshape(n, 1, -1), side.r.reshape(n, 1, -1)
    return r + alphas.view(1, -1, 1) * (x - r)


def _units_vjp(side: _Side, alphas, weights, latent_dim: int) -> torch.Tensor:
    """U (n, d, units) by d vector-Jacobian products (one-hots batched with ``is_grads_batched``)."""
    n, k = len(side.x), len(alphas)
    shape = tuple(side.x.shape[1:])
    n_feat = math.prod(shape)
    diff = (side.x - side.r).reshape(1, n, n_feat)
    points = _points(side, alphas).reshape(n * k, *shape).detach().requires_grad_(True)
    rows = torch.arange(n, device=points.device).repeat_interleave(k)
    with torch.enable_grad():
        z = side.forward(points, rows)
    d = z.shape[1]
    out = torch.zeros(n, d, side.n_units, dtype=side.x.dtype, device=side.x.device)
    per_pass = max(1, min(d, pass_budget(points.device) // max(1, n * k * n_feat)))
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    batched = True
    for start in range(0, d, per_pass):
        js = slice(start, min(start + per_pass, d))
        cotangents = eye[js].unsqueeze(1).expand(-1, n * k, d)
        grads = None
        if batched:
            try:
                grads = torch.autograd.grad(z, points, cotangents, retain_graph=True, is_grads_batched=True)[0]
            except RuntimeError:  # an op without a batching rule: one backward pass per direction
                batched = False
        if grads is None:
            grads = torch.stack([torch.autograd.grad(z, points, c, retain_graph=True)[0] for c in cotangents])
        grads = (grads.reshape(-1, n, k, n_feat) * weights.view(1, 1, k, 1)).sum(2) * diff  # (c, n, F)
        units = torch.zeros(len(grads), n, side.n_units, dtype=grads.dtype, device=grads.device)
        out[:, js] = units.index_add_(2, side.unit_index, grads).permute(1, 0, 2)
    return out


def _units_jvp(side: _Side, alphas, weights, latent_dim: int, active: torch.Tensor) -> torch.Tensor:
    """U (n, d, units) by one Jacobian-vector product per active unit, tangent (x − r) on that unit only. The
    tangents of a chunk of units are vmapped over one primal pass (the points are shared); a module whose ops
    have no batching rule gets the points replicated per unit instead."""
    n, k = len(side.x), len(alphas)
    shape = tuple(side.x.shape[1:])
    n_feat = math.prod(shape)
    diff = (side.x - side.r).reshape(1, n, 1, n_feat)
    points = _points(side, alphas).detach().reshape(n * k, *shape)
    rows = torch.arange(n, device=points.device).repeat_interleave(k)
    out = torch.zeros(n, latent_dim, side.n_units, dtype=side.x.dtype, device=side.x.device)
    per_pass = max(1, min(len(active), pass_budget(points.device) // max(1, n * k * n_feat)))
    vmapped = True

    def tangent_of(t):
        return torch.func.jvp(lambda q: side.forward(q, rows), (points,), (t,))[1]

    for start in range(0, len(active), per_pass):
        us = active[start:start + per_pass]
        c = len(us)
        on_unit = (side.unit_index.view(1, n_feat) == us.view(c, 1)).to(diff.dtype)  # (c, F)
        tangents = (diff * on_unit.view(c, 1, 1, n_feat)).expand(c, n, k, n_feat).reshape(c, n * k, *shape)
        with _math_attention(), torch.no_grad(), warnings.catch_warnings():
            # torch's first forward-mode call scripts its decompositions (a FutureWarning of torch.jit.script)
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            jv = None
            if vmapped:
                try:
                    jv = torch.func.vmap(tangent_of)(tangents)  # (c, n*k, d)
                except (RuntimeError, ValueError) as error:
                    if _no_forward_ad(error):
                        raise
                    vmapped = False
            if jv is None:  # one primal pass per unit: points replicated
                many = torch.arange(n, device=points.device).repeat_interleave(k).repeat(c)
                jv = torch.func.jvp(lambda q: side.forward(q, many),
                                    (points.repeat(c, *([1] * len(shape))),),
                                    (tangents.reshape(c * n * k, *shape),))[1]
        jv = (jv.reshape(c, n, k, -1) * weights.view(1, 1, k, 1)).sum(2)  # (c, n, d)
        out[:, :, us] = jv.permute(1, 2, 0).to(out.dtype)
    return out


def _no_forward_ad(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) says an op has no forward-mode derivative."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, NotImplementedError) or "forward AD" in str(error):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _units(side: _Side, alphas, weights, latent_dim: int, mode: str) -> torch.Tensor:
    active = _active_units(side)
    chosen = mode
    if mode == "auto":
        chosen = "jvp" if len(active) < latent_dim else "vjp"
    if chosen == "jvp":
        try:
            return _units_jvp(side, alphas, weights, latent_dim, active)
        except (NotImplementedError, RuntimeError, ValueError) as error:
            if not _no_forward_ad(error):
                raise
            if mode == "jvp":
                raise InvalidArgument("mode='jvp' needs forward-mode derivatives, which an op of this encoder lacks "
                                      f"({error.__cause__ or error}); use mode='vjp' or 'auto'.") from error
    return _units_vjp(side, alphas, weights, latent_dim)


@precise
def interactions(model, a, b, n_steps: int = DEFAULT_STEPS, similarity: str = "dot", baseline=None,
                 units: bool = True, batch_size: int = 64, return_error: bool = False, method: str = "gausslegendre",
                 mode: str = "auto", display_progressbar: bool = False):
    """Integrated-Jacobian interactions of the pair similarity s(a, b) (module docstring): A[n, u, v] is the share
    of s(a_n, b_n) − s(r_a, b_n) − s(a_n, r_b) + s(r_a, r_b) due to unit u of a_n together with unit v of b_n.

    Parameters
    ----------
    model : nn.Module or lfeval.Encoder
        The encoder f (eval mode).
    a, b : array or tensor ``(N, *input_shape)``
        The pairs (a single ``b`` is paired with every ``a``).
    n_steps : int
        Quadrature points of the path integral (per side).
    similarity : {"dot", "cosine"}
        The dot product, or the cosine (the dot product of the normalised encoder; the identity holds for it).
    baseline : number, tensor or callable, optional
        r_a and r_b: the encoder's baseline by default (text: its tokens deleted, or masked).
    units : bool
        Sum the features into the modality's masking units (pixels, time steps, entries, tokens): A is
        (N, units_a, units_b), units flattened in C order of :meth:`lfeval.modalities.Modality.unit_shape`. False:
        the features themselves, (N, F, F) (continuous inputs only; memory grows with F²).
    batch_size : int
        Pairs per chunk (fewer for large inputs: :func:`lfeval.memory.rows_per_pass` over the chunk's points).
    return_error : bool
        Also return the completeness error ``|ΣA − (s(a, b) − s(r_a, b) − s(a, r_b) + s(r_a, r_b))|`` (N,),
        absolute, computed in the encoder's dtype.
    method : str
        The quadrature rule (:data:`QUADRATURES`; xsbert's is ``"riemann_right"``).
    mode : {"auto", "vjp", "jvp"}
        How J̄ is computed (module docstring); the result is the same.
    display_progressbar : bool
        A tqdm bar over chunks of pairs.

    Returns
    -------
    np.ndarray (N, U_a, U_b) float32, and with ``return_error`` the np.ndarray (N,) float32 of errors.
    """
    kind = check_choice(similarity, SIMILARITIES, "similarity")
    mode = check_choice(mode, MODES, "mode")
    alphas, weights = quadrature(n_steps, method)
    batch_size = check_positive_int(batch_size, "batch_size")
    encoder = similarity_encoder(model, a, kind)
    xa, xb = pair_inputs(encoder, a, b)
    dtype, device = encoder.data_dtype, encoder.device
    alphas = torch.tensor(alphas, dtype=dtype, device=device)
    weights = torch.tensor(weights, dtype=dtype, device=device)
    space = encoder.modality.attribution_space(encoder)
    width = 1 if space is None else space.module.embed(torch.zeros(1, 1, dtype=torch.long, device=device)).shape[-1]
    rows = rows_per_pass(xa[0].numel() * width * len(alphas), batch_size, device=device)
    bar = tqdm(total=len(xa), desc="IntegratedJacobians", disable=not display_progressbar, leave=False)

    def chunk(sl: slice) -> tuple:
        side_a = _Side(encoder, xa[sl], baseline, units)
        side_b = _Side(encoder, xb[sl], baseline, units)
        (za, zra), (zb, zrb) = side_a.latents(), side_b.latents()
        d = za.shape[1]
        u_a = _units(side_a, alphas, weights, d, mode)
        u_b = _units(side_b, alphas, weights, d, mode)
        matrix = torch.einsum("ndu,ndv->nuv", u_a, u_b)
        target = ((za - zra) * (zb - zrb)).sum(-1).to(matrix.dtype)
        error = (matrix.sum((1, 2)) - target).abs()
        bar.update(len(matrix))
        return matrix.detach().to("cpu", torch.float32), error.detach().to("cpu", torch.float32)

    try:
        matrix, error = run_in_chunks(chunk, len(xa), rows,
                                      combine=lambda parts: tuple(torch.cat(p) for p in zip(*parts)))
    finally:
        bar.close()
    if return_error:
        return matrix.numpy(), error.numpy()
    return matrix.numpy()


def completeness_target(model, a, b, similarity: str = "dot", baseline=None, batch_size: int = 256) -> torch.Tensor:
    """s(a, b) − s(r_a, b) − s(a, r_b) + s(r_a, r_b) = (f(a) − f(r_a))·(f(b) − f(r_b)), (N,), CPU, in the latents'
    dtype: what :func:`interactions` sums to. For text the references are the baseline tokens' input embeddings
    under each input's own attention mask (the path the integral follows)."""
    kind = check_choice(similarity, SIMILARITIES, "similarity")
    encoder = similarity_encoder(model, a, kind)
    xa, xb = pair_inputs(encoder, a, b)
    step = check_positive_int(batch_size, "batch_size")

    def chunk(sl: slice) -> torch.Tensor:
        (za, zra), (zb, zrb) = _Side(encoder, xa[sl], baseline, True).latents(), \
            _Side(encoder, xb[sl], baseline, True).latents()
        return ((za - zra) * (zb - zrb)).sum(-1).cpu()

    return run_in_chunks(chunk, len(xa), rows_per_pass(xa[0].numel(), step, device=encoder.device))


class IntegratedJacobians:
    """Integrated-Jacobian pair interactions, captum style:
    ``IntegratedJacobians(model, similarity="cosine").attribute(a, b, n_steps=32)`` (:func:`interactions`).

    Parameters
    ----------
    model : nn.Module or lfeval.Encoder
    similarity : {"dot", "cosine"}
    n_steps, method, units, mode :
        Defaults of :meth:`attribute` (see :func:`interactions`).
    """

    def __init__(self, model, similarity: str = "dot", n_steps: int = DEFAULT_STEPS, method: str = "gausslegendre",
                 units: bool = True, mode: str = "auto"):
        self.model = model
        self.similarity = check_choice(similarity, SIMILARITIES, "similarity")
        quadrature(n_steps, method)  # validated now
        self.n_steps, self.method, self.units = n_steps, method, bool(units)
        self.mode = check_choice(mode, MODES, "mode")

    def attribute(self, a, b, baseline=None, n_steps=None, return_error: bool = False, batch_size: int = 64,
                  **options):
        """:func:`interactions` with this object's settings (``options`` override ``method``, ``units``,
        ``mode``, ``display_progressbar``)."""
        settings = dict(method=self.method, units=self.units, mode=self.mode)
        settings.update(options)
        return interactions(self.model, a, b, n_steps=n_steps or self.n_steps, similarity=self.similarity,
                            baseline=baseline, batch_size=batch_size, return_error=return_error, **settings)

    def completeness_target(self, a, b, baseline=None) -> torch.Tensor:
        """What the interactions sum to (:func:`completeness_target`)."""
        return completeness_target(self.model, a, b, similarity=self.similarity, baseline=baseline)

    def __repr__(self) -> str:
        return f"IntegratedJacobians(similarity={self.similarity!r}, n_steps={self.n_steps}, method={self.method!r})"


__all__ = ["interactions", "IntegratedJacobians", "completeness_target", "quadrature", "MODES", "QUADRATURES",
           "DEFAULT_STEPS"]
