"""The data tests' fixtures (tokenizers of the tiny models, a file writer), shared here."""
from tests.data.conftest import tokenizer, write  # noqa: F401
