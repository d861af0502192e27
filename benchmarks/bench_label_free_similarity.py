"""How well does fully label-free example consistency track the labelled SimilarityRate?

For every encoder (the five pretext tasks) and every example-importance method (cosine, DkNN, SimplEx, TracIn,
influence functions, and a random matrix as a control), score the first 200 test examples against 1000
training examples with
  labelled      SimilarityRate (the paper's: same-label share of the top-M, M = 1, 5, 10, 20, 50)
  kmeans/own    LabelFreeSimilarityRate(rule="kmeans"), pseudo-labels = 10 k-means clusters of the encoder's latents
  kmeans/input  the same on the raw pixels (one reference for every encoder)
  knn/own       rule="knn": share of the top-M among the 20 latent nearest neighbours
  knn/input     the same with pixel-space neighbours
and report the Pearson and Spearman correlation of each label-free rate with the labelled one over all
(encoder, method) cells, the mean within-encoder Spearman correlation over methods, and the across-encoder
Spearman correlation for each method.

Run: .venv/bin/python benchmarks/bench_label_free_similarity.py [data set name, default digits] [data root]
"""

import sys

import numpy as np
import pandas as pd
import scipy.stats
import torch

from lfeval.config import RunConfig
from lfeval.metrics import LabelFreeSimilarityRate, SimilarityRate
from lfeval.pipeline.stages import RunData

N_TRAIN, N_TEST = 1000, 200
METHODS = ("cosine", "dknn", "simplex", "tracin", "influence", "random")
VARIANTS = {"kmeans/own": {"rule": "kmeans"}, "kmeans/input": {"rule": "kmeans", "reference": "input"},
            "knn/own": {"rule": "knn"}, "knn/input": {"rule": "knn", "reference": "input"}}


def scores(data: str, root=None) -> pd.DataFrame:
    config = RunConfig(data=data, data_root=root, n_explain=N_TEST, n_train_examples=N_TRAIN,
                       cache_dir=".lfeval-cache/bench", meta_metrics=[], quiet=True)
    rd = RunData(config)
    x, y = rd.x_np, rd.y.numpy()
    x_train = rd.x_train.numpy()
    rows = []
    for pretext in config.pretexts:
        enc = rd.encoder(pretext)
        for method in METHODS:
            if method == "random":
                a = np.random.default_rng(0).random((len(x), len(x_train))).astype(np.float32)
            else:
                a = rd.example_explain(enc, x, method=method)
            row = {"pretext": pretext, "method": method,
                   "labelled": np.mean(SimilarityRate(rd.y_train.numpy())(enc, x, y_batch=y, a_batch=a))}
            for name, kw in VARIANTS.items():
                row[name] = np.mean(LabelFreeSimilarityRate(x_train, **kw)(enc, x, a_batch=a))
            rows.append(row)
    return pd.DataFrame(rows)


def correlations(table: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for name in VARIANTS:
        within = [scipy.stats.spearmanr(g["labelled"], g[name])[0] for _, g in table.groupby("pretext")]
        across = {m: scipy.stats.spearmanr(g["labelled"], g[name])[0] for m, g in table.groupby("method")
                  if m != "random"}
        out[name] = {"pearson (all cells)": scipy.stats.pearsonr(table["labelled"], table[name])[0],
                     "spearman (all cells)": scipy.stats.spearmanr(table["labelled"], table[name])[0],
                     "spearman within encoder (mean)": np.mean(within),
                     **{f"spearman across encoders, {m}": v for m, v in across.items()}}
    return pd.DataFrame(out)


if __name__ == "__main__":
    torch.set_num_threads(2)
    data = sys.argv[1] if len(sys.argv) > 1 else "digits"
    table = scores(data, root=sys.argv[2] if len(sys.argv) > 2 else None)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))
    print()
    print(correlations(table).round(3).to_string())
