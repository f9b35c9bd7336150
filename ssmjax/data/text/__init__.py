"""Language-modelling text: corpora in the WikiText layout, byte-level BPE, memory-mapped token
streams and their windows. :class:`TextCorpus` is the entry point."""

from ssmjax.data.text.corpus import CORPORA, PreparedCorpus, TextCorpus
from ssmjax.data.text.tokens import TokenStream, TokenWindows, unigram_entropy

__all__ = ["CORPORA", "PreparedCorpus", "TextCorpus", "TokenStream", "TokenWindows",
           "unigram_entropy"]
