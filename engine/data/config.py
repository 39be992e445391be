"""Settings of the dataset import, shared by `tailor data check`, training and the app."""
from __future__ import annotations

from dataclasses import dataclass

from ..configs import opt

TOO_LONG_CHOICES = ["truncate", "drop"]


@dataclass
class DataConfig:
    mask_prompt: bool = opt(
        True, "train only on assistant/completion tokens (and each turn's end token); "
              "text datasets always train on every token")
    valid_fraction: float = opt(
        0.1, "share of examples held out for validation when the dataset has no valid file "
             "(at least one example)", minimum=0.0, maximum=0.5)
    split_seed: int = opt(0, "seed of the train/validation split (same seed, same split)",
                          minimum=0, flag="--split-seed")
    max_seq_length: int = opt(2048, "longest example in tokens; longer ones are truncated or "
                                    "dropped (see --too-long)", minimum=8, maximum=1 << 20)
    too_long: str = opt("truncate", "what to do with examples over the max sequence length",
                        choices=TOO_LONG_CHOICES)
    dedupe: bool = opt(True, "remove exact duplicate examples (they are counted in the report)")
    strict: bool = opt(False, "treat any bad example as an error: an import stops at the "
                              "first one (`tailor data check` lists them all and exits 1) "
                              "instead of skipping and reporting it")
    min_examples: int = opt(1, "fail when fewer training examples than this remain (the "
                               "trainer sets it to its batch size)", minimum=1)
    chat_template: str = opt("", "a Jinja chat template (file path or template text) to use "
                                 "instead of the model's own")
    max_line_mib: int = opt(16, "longest single line (or example in a .json file) accepted, "
                                "in MiB",
                            minimum=1, maximum=4096)
    preview_count: int = opt(3, "how many rendered examples the report previews",
                             minimum=0, maximum=1000, flag="--preview-count")
