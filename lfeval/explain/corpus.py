"""Corpus and foil of COCOA (Lin et al., "Contrastive Corpus Attribution for Explaining Representations",
ICLR 2023): which training examples an explicand is compared with.

COCOA explains the *contrastive corpus similarity* of an explicand x::

    g(x') = (1/|C|) Σ_{c ∈ C} cos(f(x'), f(c)) - (1/|F|) Σ_{a ∈ F} cos(f(x'), f(a))
          = <f(x') / ||f(x')||, t>,   t = mean_C f(c)/||f(c)|| - mean_F f(a)/||f(a)||,

the auxiliary function g_x of Crabbé & van der Schaar with the reference latent f(x) replaced by the corpus
target t and f(x') normalised. A :class:`Corpus` says how C and F are chosen from a pool of training inputs:

* ``by="cluster"`` (label-free, the default): k-means (seeded) on the pool's latents; the corpus of an
  explicand is (a sample of) the pool members of its nearest centroid, the foil a sample of the others.
* ``by="label"``: the corpus is the pool members of one class, ``label``, or, with ``label=None``, of each
  explicand's class predicted by a k-NN vote of its latent neighbours in the pool; the foil a sample of the
  other classes.
* ``by="index"``: a user-given index set ``corpus_index`` (and optionally ``foil_index``; default a sample of
  the rest) for every explicand.

Sizes follow the authors' scripts: 100 corpus and 500 foil examples (``corpus_size``, ``foil_size``).
:meth:`Corpus.fit` encodes the pool with a given encoder and returns a :class:`FittedCorpus`: per explicand
its group (cluster, class or the index set), the target t of that group, and, for COCOA's evaluation, the
*corpus majority*: the class that a linear probe on the pool's latents (trained on the labels, the cluster ids,
or corpus membership) predicts most often on the corpus, and the probe's probability of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..encoder import check_model
from ..errors import InvalidArgument
from ..validation import as_tensor, check_batch, check_choice, check_finite, check_positive_int

BY = ("cluster", "label", "index")
#: the options of :class:`Corpus` (COCOA passes them through, the metrics take them)
CORPUS_OPTIONS = ("x_train", "y_train", "by", "label", "corpus_index", "foil_index", "n_clusters", "corpus_size",
                  "foil_size", "k", "corpus_seed", "foil_seed")


class Corpus:
    """How the corpus and the foil of each explicand are chosen from a pool (module docstring).

    Parameters
    ----------
    x_train : array or tensor ``(P, *input_shape)``
        The pool of training inputs.
    by : {"cluster", "label", "index"}
    y_train : array (P,), optional
        Labels of the pool (``by="label"``; with ``by="index"`` they define the corpus majority).
    label : int, optional
        ``by="label"``: the corpus class for every explicand (None: each explicand's k-NN predicted class).
    corpus_index, foil_index : sequences of int, optional
        ``by="index"``: the corpus, and optionally the foil, as positions in the pool.
    n_clusters : int
        ``by="cluster"``: k-means clusters.
    corpus_size, foil_size : int
        Corpus and foil examples drawn (without replacement, seeded) when more are available.
    k : int
        Neighbours of the k-NN vote (``by="label"``, ``label=None``).
    corpus_seed : int
        Seeds k-means and the corpus draws.
    foil_seed : int, optional
        Seeds the foil draws (default ``corpus_seed``). COCOA evaluates with a foil drawn independently of
        the one it explains with; the metrics default to ``corpus_seed + 1``.
    """

    def __init__(self, x_train=None, by: str = "cluster", y_train=None, label: Optional[int] = None, corpus_index=None,
                 foil_index=None, n_clusters: int = 10, corpus_size: int = 100, foil_size: int = 500, k: int = 10,
                 corpus_seed: int = 0, foil_seed: Optional[int] = None):
        if x_train is None:
            raise InvalidArgument("COCOA needs `x_train`: the pool of training inputs its corpus and foil come from.")
        self.x_train = check_finite(check_batch(as_tensor(x_train, "x_train"), "x_train"), "x_train").float()
        self.by = check_choice(by, BY, "corpus rule `by`")
        self.y_train = None
        if y_train is not None:
            self.y_train = torch.as_tensor(np.asarray(y_train.cpu() if isinstance(y_train, torch.Tensor) else y_train))
            if self.y_train.shape != (len(self.x_train),):
                raise InvalidArgument(f"`y_train` must have one label per pool input, shape ({len(self.x_train)},), "
                                      f"got {tuple(self.y_train.shape)}.")
            self.y_train = self.y_train.long()
        if self.by == "label" and self.y_train is None:
            raise InvalidArgument('by="label" needs `y_train`, the labels of the pool.')
        if self.by == "label" and label is not None and not bool((self.y_train == int(label)).any()):
            raise InvalidArgument(f"`label`={label} does not occur in `y_train`.")
        self.label = None if label is None else int(label)
        P = len(self.x_train)
        self.corpus_index = self._index(corpus_index, "corpus_index", P)
        self.foil_index = self._index(foil_index, "foil_index", P)
        if self.by == "index" and self.corpus_index is None:
            raise InvalidArgument('by="index" needs `corpus_index`: positions of the corpus examples in `x_train`.')
        self.n_clusters = check_positive_int(n_clusters, "n_clusters", minimum=2)
        self.corpus_size, self.foil_size = check_positive_int(corpus_size, "corpus_size"), check_positive_int(
            foil_size, "foil_size")
        self.k = check_positive_int(k, "k")
        if self.by == "cluster" and self.n_clusters > P:
            raise InvalidArgument(f"`n_clusters`={n_clusters} exceeds the {P} pool inputs.")
        self.corpus_seed = int(corpus_seed)
        self.foil_seed = self.corpus_seed if foil_seed is None else int(foil_seed)
        digest = hashlib.sha1(self.x_train.numpy().tobytes()).hexdigest()[:12]
        self._key = (f"Corpus(by={self.by!r}, pool={digest}, n={P}, label={self.label}, n_clusters={self.n_clusters}, "
                     f"corpus_size={self.corpus_size}, foil_size={self.foil_size}, k={self.k}, "
                     f"seeds={self.corpus_seed}/{self.foil_seed})")

    @staticmethod
    def _index(index, name: str, n: int) -> Optional[torch.Tensor]:
        if index is None:
            return None
        idx = torch.as_tensor(np.asarray(index)).long().reshape(-1)
        if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= n or len(idx.unique()) != len(idx):
            raise InvalidArgument(f"`{name}` must be distinct positions in [0, {n}) of `x_train`, got {index!r}.")
        return idx

    def __repr__(self) -> str:
        return self._key

    @classmethod
    def from_options(cls, options: dict, **defaults) -> "Corpus":
        """A Corpus from the :data:`CORPUS_OPTIONS` in ``options`` (removed from it)."""
        values = {**defaults, **{k: options.pop(k) for k in CORPUS_OPTIONS if k in options}}
        return cls(**values)

    # ------------------------------------------------------------------ fitting
    def fit(self, encoder, batch_size: int = 1024) -> "FittedCorpus":
        """Encode the pool with ``encoder`` and choose every group's corpus and foil."""
        from sklearn.cluster import KMeans

        encoder = check_model(encoder, self.x_train, name="encoder")
        pool = encoder.canonical(self.x_train)
        encoder.check_sample_shape(tuple(pool.shape[1:]), "x_train")
        device = encoder.device
        with torch.no_grad():
            h = torch.cat([encoder(pool[i:i + batch_size].to(device)) for i in range(0, len(pool), batch_size)])
        h = h.double()
        P = len(h)
        centroids, classes, group_of_class = None, None, None
        if self.by == "cluster":
            km = KMeans(n_clusters=self.n_clusters, n_init=3, random_state=self.corpus_seed).fit(h.cpu().numpy())
            centroids = torch.as_tensor(km.cluster_centers_, dtype=torch.float64, device=device)
            pool_groups = torch.cdist(h, centroids).argmin(1)
            n_groups = self.n_clusters
            classes = pool_groups
        elif self.by == "label":
            classes = self.y_train.to(device)
            values = classes.unique()
            group_of_class = values
            pool_groups = torch.searchsorted(values, classes)
            n_groups = len(values)
        else:
            pool_groups = torch.ones(P, dtype=torch.long, device=device)  # 1 = not in the corpus
            pool_groups[self.corpus_index.to(device)] = 0
            n_groups = 1
            classes = self.y_train.to(device) if self.y_train is not None else 1 - pool_groups
        unit = F.normalize(h, dim=1)
        gen_c = torch.Generator().manual_seed(self.corpus_seed)
        gen_f = torch.Generator().manual_seed(self.foil_seed)
        targets, corpora, foils = [], [], []
        for g in range(n_groups):  # a loop over groups (clusters or classes, a handful), not over samples
            members = (pool_groups == g).nonzero().flatten().cpu()
            others = (pool_groups != g).nonzero().flatten().cpu()
            if len(members) == 0:
                raise InvalidArgument(f"Corpus group {g} ({self.by}) has no pool member; use fewer `n_clusters` or a "
                                      "larger pool.")
            corpus = members[torch.randperm(len(members), generator=gen_c)[:self.corpus_size]]
            if self.foil_index is not None:
                foil = self.foil_index
            else:
                if len(others) == 0:
                    raise InvalidArgument("The foil would be empty: every pool input is in the corpus.")
                foil = others[torch.randperm(len(others), generator=gen_f)[:self.foil_size]]
            corpora.append(corpus)
            foils.append(foil)
            targets.append(unit[corpus.to(device)].mean(0) - unit[foil.to(device)].mean(0))
        return FittedCorpus(corpus=self, encoder=encoder, latents=h, targets=torch.stack(targets),
                            corpora=corpora, foils=foils, centroids=centroids, classes=classes,
                            group_of_class=group_of_class)


@dataclass
class FittedCorpus:
    """A :class:`Corpus` encoded by one encoder: groups, targets and the corpus majority."""

    corpus: Corpus
    encoder: torch.nn.Module
    latents: torch.Tensor  # (P, d) float64, the pool's
    targets: torch.Tensor  # (G, d) float64: corpus mean - foil mean of unit latents, per group
    corpora: list  # per group: pool positions of its corpus
    foils: list  # per group: pool positions of its foil
    centroids: Optional[torch.Tensor]  # (G, d) for by="cluster"
    classes: torch.Tensor  # (P,) the probe's classes of the pool
    group_of_class: Optional[torch.Tensor]  # sorted class values for by="label"
    _probe: Optional[tuple] = None

    def groups(self, z: torch.Tensor) -> torch.Tensor:
        """The group (N,) of explicands with latents z (N, d)."""
        c = self.corpus
        z = z.double()
        if c.by == "cluster":
            return torch.cdist(z, self.centroids).argmin(1)
        if c.by == "index":
            return torch.zeros(len(z), dtype=torch.long, device=z.device)
        if c.label is not None:
            return torch.full((len(z),), int(torch.searchsorted(self.group_of_class, torch.tensor(c.label,
                              device=z.device))), dtype=torch.long, device=z.device)
        sim = F.normalize(z, dim=1) @ F.normalize(self.latents, dim=1).T  # k-NN vote on cosine similarity
        nearest = torch.topk(sim, min(c.k, sim.shape[1]), dim=1).indices
        votes = F.one_hot(torch.searchsorted(self.group_of_class, self.classes[nearest]),
                          len(self.group_of_class)).sum(1)
        return votes.argmax(1)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The target t (N, d) of each explicand x (on the encoder's device), in x's dtype."""
        with torch.no_grad():
            z = self.encoder(x)
        return self.targets[self.groups(z)].to(x.dtype)

    # ------------------------------------------------------------------ the corpus majority (evaluation)
    def probe(self) -> tuple:
        """A multinomial logistic-regression probe on the pool's standardised latents and its classes, as the
        linear evaluation head COCOA reads the majority probability from: ``(mean, scale, W (K, d), b (K,),
        class values)``, fitted once."""
        if self._probe is None:
            from sklearn.linear_model import LogisticRegression

            h = self.latents.cpu().numpy()
            mean, scale = h.mean(0), h.std(0) + 1e-12
            y = self.classes.cpu().numpy()
            clf = LogisticRegression(max_iter=2000, random_state=self.corpus.corpus_seed).fit((h - mean) / scale, y)
            coef, bias = clf.coef_, clf.intercept_
            if len(clf.classes_) == 2:  # scikit-learn's binary form: one row for the second class
                coef, bias = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
            dev = self.latents.device
            self._probe = tuple(torch.as_tensor(v, dtype=torch.float64, device=dev) for v in
                                (mean, scale, coef, bias, clf.classes_))
        return self._probe

    def probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """The probe's class probabilities (N, K) of latents z (N, d)."""
        mean, scale, w, b, _ = self.probe()
        return torch.softmax(((z.double() - mean) / scale) @ w.T + b, dim=1)

    def majority(self) -> torch.Tensor:
        """Per group, the column of the class the probe predicts most often on the corpus (COCOA's
        ``corpus_majority_pred``; ties go to the smallest class)."""
        preds = [self.probabilities(self.latents[c.to(self.latents.device)]).argmax(1) for c in self.corpora]
        return torch.stack([p.mode().values for p in preds])


__all__ = ["Corpus", "FittedCorpus", "BY", "CORPUS_OPTIONS"]
