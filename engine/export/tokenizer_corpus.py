"""The export's tokenizer corpus lives in engine/models/tokenizer_corpus.py (the tokenizer
loader checks the loaded tokenizer on it too, and models sits below export); this keeps the
old import path."""
from ..models.tokenizer_corpus import *  # noqa: F401,F403
from ..models.tokenizer_corpus import tokenizer_corpus  # noqa: F401
