"""Action tokenizers (registry: ``TOKENIZERS``)."""

from apo.tokenizers.base import TOKENIZERS, ActionTokenizer, TokenizerFileError, load_tokenizer, save_tokenizer, tokenizer_from_dict
from apo.tokenizers.bins import BinActionTokenizer
from apo.tokenizers.fast import FASTActionTokenizer, FASTConfig

__all__ = [
    "TOKENIZERS", "ActionTokenizer", "BinActionTokenizer", "FASTActionTokenizer", "FASTConfig", "TokenizerFileError", "load_tokenizer",
    "save_tokenizer", "tokenizer_from_dict",
]
