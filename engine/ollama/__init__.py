"""Hand models to Ollama: Jinja → Go template + stops, the REST client, Modelfile folders.

The team interface: ``chat_template_to_ollama(jinja_template, tokenizer_info) -> (go_template,
stops)``; ``OllamaClient(host)`` with ``status()`` and ``create(...)``;
``write_modelfile_folder(...)``. ``engine.ollama.handoff`` composes them (``send_gguf``,
``send_adapter``, ``write_folder``); ``engine.ollama.cli`` is `tailor ollama`.
"""
from .client import OllamaClient, OllamaError, OllamaStatus
from .modelfile import ModelfileSpec, write_modelfile_folder
from .templates import OllamaTemplate, TokenizerInfo, chat_template_to_ollama, convert_chat_template

__all__ = ["OllamaClient", "OllamaError", "OllamaStatus", "ModelfileSpec",
           "write_modelfile_folder", "OllamaTemplate", "TokenizerInfo", "chat_template_to_ollama",
           "convert_chat_template"]
