"""RELAX (Wickstrøm et al., "RELAX: Representation Learning Explainability", IJCV 2023): feature importance of
a representation by masking the input, with an uncertainty map.

For masks M_1..M_K in [0, 1] over the input's masking units and the similarity s_k = cos(f(x), f(x ⊙ M_k))
(masked units take the baseline: x ⊙ M + b ⊙ (1 - M), and b = 0 is the paper's x ⊙ M), the importance of unit
u is the mask-weighted mean of the similarities and its uncertainty the mask-weighted variance (the paper's
RELAX and U-RELAX)::

    R(u) = Σ_k M_k(u) s_k / Σ_k M_k(u),      U(u) = Σ_k M_k(u) (s_k - R(u))² / Σ_k M_k(u).

The masks are the paper's generator (``relax_xai.masking_functions.mask_generator``): Bernoulli cells on a
``num_cells`` grid, upsampled bilinearly to the input, reflect-padded by num_cells // 2 and cropped at a random
shift, so each mask is smooth and in [0, 1]. lfeval draws every cell and shift from one seeded generator, shares
the K masks across the inputs (each input's map depends only on the input: batch-invariant) and evaluates
all (input, mask) pairs as whole batches on the encoder's device, accumulating the sums above as matrix
products in float64 instead of relax-xai's per-mask Python loop.

Images use 2-D masks over pixels (shared by the channels), time series 1-D masks over time steps (shared by
the channels); other modalities have no spatial order, so each unit is kept with probability ``p_keep`` on
its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidArgument
from ..validation import check_positive_int
from .base import register_explainer
from .masking import MaskingExplainer

#: relax-xai's initial sum of weights (avoids 0 / 0 for a unit no mask keeps)
WEIGHT_EPS = 1e-10


def draw_cells(n_masks: int, num_cells: int = 7, n_dims: int = 2, p_keep: float = 0.5, seed: int = 0) -> tuple:
    """The random part of :func:`relax_masks`, on the CPU: ``(cells (K, 1, *[num_cells] * n_dims) float,
    shifts (n_dims, K) long)``, drawn in relax-xai's order (cells, then the shift of each axis)."""
    gen = torch.Generator().manual_seed(int(seed))
    cells = (torch.rand(n_masks, 1, *((num_cells,) * n_dims), generator=gen) < p_keep).float()
    shifts = torch.stack([torch.randint(0, num_cells, (n_masks,), generator=gen) for _ in range(n_dims)])
    return cells, shifts


def smooth_masks(cells: torch.Tensor, shifts: torch.Tensor, size: tuple) -> torch.Tensor:
    """Upsample cells ``(K, 1, *cells)`` to ``size`` (bilinear in 2-D, linear in 1-D, align_corners=False),
    reflect-pad by num_cells // 2 and crop each mask at its shift: ``(K, 1, *size)``, vectorised (relax-xai crops in
    a loop over masks)."""
    n, n_dims = len(cells), len(size)
    num_cells = cells.shape[-1]
    mode = "bilinear" if n_dims == 2 else "linear"
    up = F.interpolate(cells, size=tuple(size), mode=mode, align_corners=False)
    pad = num_cells // 2
    up = F.pad(up, (pad, pad) * n_dims, mode="reflect")[:, 0]
    shifts = shifts.to(cells.device)
    index = [shifts[d][:, None] + torch.arange(size[d], device=cells.device) for d in range(n_dims)]  # (K, size_d)
    rows = torch.arange(n, device=cells.device)
    if n_dims == 2:
        out = up[rows[:, None, None], index[0][:, :, None], index[1][:, None, :]]
    else:
        out = up[rows[:, None], index[0]]
    return out.unsqueeze(1)


def relax_masks(n_masks: int, size: tuple, num_cells: int = 7, p_keep: float = 0.5, seed: int = 0,
                device=None) -> torch.Tensor:
    """The paper's smooth masks ``(K, 1, *size)`` in [0, 1]; ``size`` is (H, W) or (T,).

    With the same seed and one block, these are exactly the masks relax-xai draws after
    ``torch.manual_seed(seed)`` (tests/test_peers.py).
    """
    num_cells = check_mask_geometry(size, num_cells)
    cells, shifts = draw_cells(n_masks, num_cells, len(size), p_keep, seed)
    return smooth_masks(cells.to(device), shifts, tuple(size))


def check_mask_geometry(size: tuple, num_cells: int) -> int:
    """``num_cells`` as an int if its masks fit inputs of spatial ``size`` (an integer >= 1 whose padding,
    num_cells // 2, is smaller than every masked axis)."""
    num_cells = check_positive_int(num_cells, "num_cells")
    if num_cells // 2 >= min(size):
        raise InvalidArgument(f"`num_cells`={num_cells} pads masks by {num_cells // 2}, which needs inputs larger "
                              f"than that along every masked axis (got {tuple(size)}); pass a smaller num_cells.")
    return num_cells


def relax_statistics(similarities: torch.Tensor, masks: torch.Tensor) -> tuple:
    """``(S1, S2, W)`` of similarities (N, K) and flat masks (K, U): Σ_k M_k s_k, Σ_k M_k s_k² (N, U) and Σ_k M_k
    (U,), in float64, to be summed over blocks of masks and turned into :func:`relax_maps`."""
    s, m = similarities.double(), masks.double()
    return s @ m, (s * s) @ m, m.sum(0)


def relax_maps(s1: torch.Tensor, s2: torch.Tensor, w: torch.Tensor) -> tuple:
    """Importance R = S1 / W and uncertainty U = Σ M (s - R)² / W from the sums of :func:`relax_statistics`."""
    w = w + WEIGHT_EPS
    importance = s1 / w
    uncertainty = ((s2 - 2 * importance * s1 + importance.pow(2) * (w - WEIGHT_EPS)) / w).clamp_min(0)
    return importance, uncertainty


@register_explainer("RELAX")
class RELAX(MaskingExplainer):
    """RELAX of an encoder (module docstring): importance and, on request, uncertainty maps.

    Options: ``n_masks`` (K, default 3000 as the paper's 30 batches of 100), ``num_cells`` (7), ``p_keep``
    (0.5, relax-xai's ``probablity_of_drop``, which is the probability of a cell being *kept*). ``batch_size``
    bounds the masked inputs per forward pass (relax-xai's ``batch_size``); ``seed`` draws the masks.

    >>> import torch, lfeval
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    >>> x = torch.rand(2, 1, 4, 4)
    >>> importance, uncertainty = RELAX(net).attribute(x, n_masks=64, num_cells=3, return_uncertainty=True)
    >>> importance.shape, bool((uncertainty >= 0).all())
    (torch.Size([2, 1, 4, 4]), True)
    """

    option_names = ("n_masks", "num_cells", "p_keep")
    #: the uncertainty maps of the chunks, collected by :meth:`attribute`
    _uncertainty = None

    def attribute(self, inputs, baseline=None, seed: int = 0, batch_size: int = 256, reference=None,
                  return_uncertainty: bool = False, **options):
        """Importance ``(N, *input_shape)``, or ``(importance, uncertainty)`` with ``return_uncertainty=True``
        (captum's ``return_convergence_delta`` pattern). Both are constant over the channels a unit spans."""
        self._uncertainty = []
        importance = super().attribute(inputs, baseline=baseline, seed=seed, batch_size=batch_size,
                                       reference=reference, **options)
        if not return_uncertainty:
            return importance
        return importance, torch.cat(self._uncertainty).reshape(importance.shape)

    def _masks(self, cells, shifts, size, units, device) -> torch.Tensor:
        if size is None:
            return cells.to(device).reshape(len(cells), *units)
        return smooth_masks(cells.to(device), shifts, size).reshape(len(cells), *units)

    def attribute_batch(self, x, z_ref, baseline, seed, n_masks: int = 3000, num_cells: int = 7,
                        p_keep: float = 0.5):
        n_masks = check_positive_int(n_masks, "n_masks")
        if not 0 < float(p_keep) < 1:
            raise InvalidArgument(f"`p_keep` must be in (0, 1), got {p_keep}.")
        shape = tuple(x.shape[1:])
        units, size = self.mask_layout(shape)
        if size is not None:
            num_cells = check_mask_geometry(size, num_cells)
            cells, shifts = draw_cells(n_masks, num_cells, len(size), float(p_keep), seed)
        else:
            gen = torch.Generator().manual_seed(int(seed))
            cells = (torch.rand(n_masks, *units, generator=gen) < float(p_keep)).float()
            shifts = None
        n, n_units = len(x), int(torch.Size(units).numel())
        block = max(1, self._rows // n)
        s1 = torch.zeros(n, n_units, dtype=torch.float64, device=x.device)
        s2, w = torch.zeros_like(s1), torch.zeros(n_units, dtype=torch.float64, device=x.device)
        with torch.no_grad():
            for start in range(0, n_masks, block):
                stop = min(start + block, n_masks)
                m = self._masks(cells[start:stop], None if shifts is None else shifts[:, start:stop], size, units,
                                x.device).to(x.dtype)
                b = len(m)
                masked = self.masked(x, m, baseline)
                z = self.encoder(masked).view(n, b, -1)
                sim = F.cosine_similarity(z_ref.unsqueeze(1), z, dim=-1)  # (N, b)
                parts = relax_statistics(sim, m.reshape(b, n_units))
                s1 += parts[0]
                s2 += parts[1]
                w += parts[2]
        importance, uncertainty = relax_maps(s1, s2, w)
        expand = (n, *units)
        if self._uncertainty is not None:
            self._uncertainty.append(uncertainty.view(expand).expand(n, *shape).to("cpu", torch.float32))
        return importance.view(expand).expand(n, *shape).to(x.dtype)


__all__ = ["RELAX", "relax_masks", "draw_cells", "smooth_masks", "relax_statistics", "relax_maps"]
