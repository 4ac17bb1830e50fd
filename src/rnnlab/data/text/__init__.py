"""Text: character- and word-level language modelling (Tiny Shakespeare, Penn Treebank) and IMDB sentiment.

Language models predict the next token at every step (per-step cross-entropy). Character corpora feed one-hot
inputs [B, T, V] and report bits per character (bpc = cross-entropy / ln 2); word-level PTB feeds token ids [B, T]
(``TaskSpec.input_vocab``, embedded by the task) and reports perplexity (ppl = exp of the token-averaged
cross-entropy). Tokenised corpora are cached under ``cache_dir`` (``rnnlab.data.cache.cached``).
"""

from rnnlab.data.text.imdb import IMDBDataModule
from rnnlab.data.text.language_model import (
    LanguageModelDataModule,
    PTBCharDataModule,
    PTBWordDataModule,
    TinyShakespeareDataModule,
)

__all__ = [
    "IMDBDataModule",
    "LanguageModelDataModule",
    "PTBCharDataModule",
    "PTBWordDataModule",
    "TinyShakespeareDataModule",
]
