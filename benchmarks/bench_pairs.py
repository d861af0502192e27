"""Pairs per second of lfeval's integrated-Jacobian interactions (:func:`lfeval.explain.interactions.interactions`)
on the real all-MiniLM-L6-v2, against xsbert's procedure (Moeller et al., EMNLP 2023), and their agreement.

**Pairs.** Rotten Tomatoes test reviews of at most ``--max-tokens`` tokens ([CLS] and [SEP] included), each paired
with its nearest training review (cosine of the MiniLM embeddings, among reviews as short): "why are these two
reviews close?". Both sides are cut to the longest pair's length.

**xsbert.** The package does not install here (``pip download xsbert``: no distribution on the index this machine
reaches; its GitHub code needs a hooked sentence-transformers model and checkpoints). :func:`xsbert_procedure` is
a **transcription of its published procedure** (``XSTransformer.explain_similarity`` and
``_compute_integrated_jacobian`` of github.com/lucasmllr/xsbert): one pair at a time, for each side a batch of
the N interpolations r + α(x − r), α = 1, 1 − 1/N, ..., 1/N, plus the reference; then D = 384 backward passes, one
per embedding dimension (``torch.autograd.grad(list(emb[:, d]), interm)``), averaged over the steps; then the full
(S_a·E) × (S_b·E) matrix da ⊙ J_aᵀJ_b ⊙ dbᵀ, summed over the embedding dimensions to tokens × tokens. Two
changes, both noted: it attributes at lfeval's point (the word embeddings, with lfeval's reference: the baseline
tokens' embeddings under the sentence's own attention mask) instead of a hooked intermediate layer, so that both
compute the same quantity; and da, db broadcast instead of being ``.repeat``-ed to full matrices (same values,
two F×F copies less). MiniLM's embeddings are L2-normalised, so the dot product is the cosine (xsbert's 'dot').

**lfeval.** The same quantity batched over pairs and steps, by Jacobian-vector products over the tokens (one per
token that differs from the baseline, instead of one backward pass per embedding dimension) and never forming the
F×F matrix. Timed with xsbert's quadrature (``riemann_right``, so the matrices can agree to rounding) and with
lfeval's default Gauss-Legendre (more exact for the same steps: see the completeness errors).

Run: .venv/bin/python benchmarks/bench_pairs.py --pairs 8   (needs lfeval[text]; ~1-2 minutes on 2 CPU cores;
``--device cuda`` runs MiniLM and both procedures on a GPU; every timed call ends in a host copy, so it is synchronised)
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import pandas as pd
import torch
from tables import markdown
from timing import timed

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_key, "1")

import lfeval  # noqa: E402
from lfeval.explain.interactions import completeness_target, interactions  # noqa: E402
from lfeval.modalities.text import unpack  # noqa: E402

warnings.filterwarnings("ignore")


def nearest_pairs(enc, ds, n_pairs: int, max_tokens: int) -> tuple:
    """``(a, b)`` packed (n, 2, L): short test reviews and their nearest short training reviews."""
    short_test = ds.x_test[ds.x_test[:, 1].sum(1) <= max_tokens][:n_pairs]
    pool = ds.x_train[(ds.x_train[:, 1].sum(1) <= max_tokens)][:1500]
    with torch.no_grad():
        za, zp = enc(short_test), lfeval.memory.encode_chunks(enc, pool, 256)
    sims = za @ zp.T
    sims[sims > 0.9999] = -2  # not the review itself (duplicates)
    b = pool[sims.argmax(1).cpu()]
    length = int(torch.cat([short_test[:, 1], b[:, 1]]).sum(1).max())
    return short_test[:, :, :length].contiguous(), b[:, :, :length].contiguous()


# ------------------------------------------------------------------------------------ xsbert (transcription)
def _compute_integrated_jacobian(module, e: torch.Tensor, r: torch.Tensor, mask: torch.Tensor, n_steps: int):
    """xsbert's ``_compute_integrated_jacobian`` for one sentence (S tokens, E dims): the N interpolations and the
    reference in one batch, one backward pass per latent dimension, the mean over the steps. -> (D, S, E)."""
    # 1, 1 - 1/N, ..., 1/N
    alphas = torch.arange(1, 0, -1 / n_steps, dtype=e.dtype, device=e.device)[:n_steps].view(-1, 1, 1)
    interm = torch.cat([r + alphas * (e - r), r]).requires_grad_(True)  # xsbert's interpolation hook
    emb = module.forward_embeddings(interm, mask.expand(n_steps + 1, -1))
    jacobi = []
    for d in range(emb.shape[1]):
        grads = torch.autograd.grad(list(emb[:, d]), interm, retain_graph=d < emb.shape[1] - 1)[0].detach()
        jacobi.append(grads)
    J = torch.stack(jacobi) / n_steps
    return J[:, :-1].sum(1)


def xsbert_procedure(enc, a: torch.Tensor, b: torch.Tensor, n_steps: int) -> np.ndarray:
    """Transcription of xsbert's ``explain_similarity`` (module docstring), one pair at a time -> (n, L, L)."""
    module, vocab = enc.module, len(enc.module.vocabulary)
    out = np.zeros((len(a), a.shape[-1], b.shape[-1]), dtype=np.float32)
    for i in range(len(a)):  # xsbert explains one pair per call
        sides = []
        for x in (a[i:i + 1].to(enc.device), b[i:i + 1].to(enc.device)):
            ids, mask = unpack(x, vocab)
            base_ids, _ = unpack(enc.baseline_for(x), vocab)
            length = int(mask.sum())  # xsbert tokenises each sentence alone: its own length, no padding
            ids, mask, base_ids = ids[:, :length], mask[:, :length], base_ids[:, :length]
            with torch.no_grad():
                e, r = module.embed(ids), module.embed(base_ids)
            J = _compute_integrated_jacobian(module, e, r, mask, n_steps)
            D, S, E = J.shape
            sides.append((J.reshape(D, S * E), (e - r).reshape(S * E, 1), S, E))
        (J_a, da, Sa, Ea), (J_b, db, Sb, Eb) = sides
        J = torch.mm(J_a.T, J_b)
        A = (da * J * db.T).reshape(Sa, Ea, Sb, Eb).sum(dim=(1, 3))  # compress_embedding_dim
        out[i, :Sa, :Sb] = A.cpu().numpy()
    return out


# ------------------------------------------------------------------------------------ main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs explained by lfeval")
    parser.add_argument("--xsbert-pairs", type=int, default=2, help="of those, pairs also run through the "
                        "xsbert transcription (it is slow: D backward passes per side)")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=14)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where MiniLM and both procedures run (cpu, cuda)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    enc = lfeval.text.minilm_encoder(device=args.device)
    ds = lfeval.data.load("text:rotten_tomatoes", seed=0, max_length=args.max_tokens)
    a, b = nearest_pairs(enc, ds, args.pairs, args.max_tokens)
    tokens = float(torch.cat([a[:, 1], b[:, 1]]).sum(1).float().mean())
    print(f"{len(a)} pairs, L = {a.shape[-1]}, {tokens:.1f} tokens per sentence on average, n_steps = {args.n_steps}, "
          f"{torch.get_num_threads()} threads, device {enc.device}", flush=True)
    target = completeness_target(enc, a, b).numpy()

    interactions(enc, a[:1], b[:1], n_steps=2)  # warm-up (forward-mode set-up)
    results, rows = {}, []
    for name, method in (("lfeval (riemann_right)", "riemann_right"), ("lfeval (gausslegendre)", "gausslegendre")):
        (A, err), s = timed(lambda: interactions(enc, a, b, n_steps=args.n_steps, method=method, return_error=True))
        results[name] = A
        rows.append((name, len(a), s / len(a), len(a) / s, float(np.mean(err / np.abs(target)))))
        print(f"  {name}: {s / len(a):.2f} s per pair", flush=True)
    k = min(args.xsbert_pairs, len(a))
    # the same k pairs, timed right before the transcription (the machine is shared: the ratio is the number)
    (_, err_same), s_same = timed(lambda: interactions(enc, a[:k], b[:k], n_steps=args.n_steps,
                                                       method="riemann_right", return_error=True))
    rows.append((f"lfeval (riemann_right), the {k} xsbert pairs", k, s_same / k, k / s_same,
                 float(np.mean(err_same / np.abs(target[:k])))))
    X, s = timed(lambda: xsbert_procedure(enc, a[:k], b[:k], args.n_steps))
    err_x = np.abs(X.sum((1, 2)) - target[:k]) / np.abs(target[:k])
    rows.append(("xsbert procedure (transcription)", k, s / k, k / s, float(err_x.mean())))
    print(f"  xsbert transcription: {s / k:.2f} s per pair", flush=True)

    table = pd.DataFrame(rows, columns=["method", "pairs", "s / pair", "pairs / s", "completeness error / |target|"])
    ours = results["lfeval (riemann_right)"][:k]
    diff = float(np.abs(ours - X).max())
    corr = float(np.corrcoef(ours.ravel(), X.ravel())[0, 1])
    ratio = (s / k) / (s_same / k)
    gl = results["lfeval (gausslegendre)"][:k]
    print()
    print(markdown(table, index=False))
    print()
    agreement = pd.DataFrame([
        ("lfeval riemann_right vs xsbert", diff, float(np.abs(X).max()), corr),
        ("lfeval gausslegendre vs xsbert", float(np.abs(gl - X).max()), float(np.abs(X).max()),
         float(np.corrcoef(gl.ravel(), X.ravel())[0, 1])),
    ], columns=["matrices", "max |difference|", "max |A|", "Pearson r"])
    print(markdown(agreement, index=False))
    print(f"\nspeed-up on the same {k} pairs and quadrature (xsbert s/pair over lfeval s/pair): {ratio:.1f}x")
    print("completeness error: |sum A - target| / |target|, target = s(a,b) - s(r_a,b) - s(a,r_b) + s(r_a,r_b)")


if __name__ == "__main__":
    main()
