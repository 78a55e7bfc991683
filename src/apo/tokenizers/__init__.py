"""Action tokenizers (registry: ``TOKENIZERS``)."""

from apo.tokenizers.base import TOKENIZERS, ActionTokenizer, tokenizer_from_dict
from apo.tokenizers.bins import BinActionTokenizer

__all__ = ["TOKENIZERS", "ActionTokenizer", "BinActionTokenizer", "tokenizer_from_dict"]
