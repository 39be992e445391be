"""Base models: find them (local folder or Hugging Face id) and load them with mlx-lm."""
from .load import count_parameters, load_model, model_fingerprint, read_config
from .resolve import check_model_folder, looks_like_path, resolve_model

__all__ = ["resolve_model", "load_model", "check_model_folder", "looks_like_path",
           "model_fingerprint", "read_config", "count_parameters"]
