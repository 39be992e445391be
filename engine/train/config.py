"""Training settings: one dataclass whose help text feeds `tailor train --help` and the GUI."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..configs import opt, validate_ranges
from ..events import TailorError

METHODS = ["lora", "dora", "full"]


@dataclass
class TrainConfig:
    method: str = opt("lora", "what to train: lora (small adapter), dora (LoRA with learned "
                      "magnitudes) or full (every weight)", choices=METHODS)
    rank: int = opt(16, "LoRA rank: size of the adapter matrices", minimum=1, maximum=1024)
    alpha: float = opt(32.0, "LoRA alpha: the adapter's output is scaled by alpha/rank",
                       minimum=0.0, maximum=4096.0)
    rslora: bool = opt(False, "rank-stabilised LoRA: scale by alpha/sqrt(rank) instead")
    lora_plus_ratio: float = opt(
        0.0, "LoRA+: B's learning rate = this x A's (0 or 1: off; 16 suggested). B starts at "
        "zero and is the matrix that learns the new features; larger steps for it train "
        "faster at the same cost (Hayou et al. 2024). DoRA's magnitudes keep A's rate",
        minimum=0.0, maximum=1024.0)
    dropout: float = opt(0.05, "dropout on the adapter input", minimum=0.0, maximum=0.9)
    targets: str = opt("all-linear", "which layers get adapters: attention, all-linear, or a "
                       "comma-separated list of module names (e.g. q_proj,v_proj)")
    num_layers: int = opt(-1, "adapt only the last N transformer blocks (-1: all)",
                          minimum=-1, maximum=100000)
    learning_rate: float = opt(1e-4, "peak learning rate", minimum=0.0, maximum=1.0)
    warmup: float = opt(0.03, "fraction of the steps spent warming the learning rate up",
                        minimum=0.0, maximum=0.5)
    schedule: str = opt("cosine", "learning-rate decay after warm-up",
                        choices=["cosine", "constant"])
    weight_decay: float = opt(0.0, "AdamW weight decay", minimum=0.0, maximum=1.0)
    epochs: float = opt(2.0, "passes over the training set (ignored when iters is set)",
                        minimum=0.01, maximum=1000.0)
    iters: int = opt(0, "optimizer steps to train (0: use epochs)", minimum=0, maximum=10**8)
    batch_size: int = opt(4, "examples per micro-batch", minimum=1, maximum=4096)
    grad_accumulation: int = opt(1, "micro-batches per optimizer step (effective batch = "
                                 "batch size x this)", minimum=1, maximum=1024)
    max_seq_length: int = opt(2048, "longest example in tokens (longer ones are truncated)",
                              minimum=8, maximum=1 << 20)
    pack: bool = opt(False, "pack several examples into each row, up to max-seq-length tokens, "
                     "each attending only to itself: less padding, and fewer, fuller steps "
                     "(batch-size then counts rows). Every example's loss is as unpacked")
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0: off)", minimum=0.0,
                           maximum=1e6)
    grad_checkpoint: bool = opt(False, "recompute activations in the backward pass: less "
                                "memory, about 30% slower")
    seed: int = opt(0, "random seed (data order, dropout, adapter init)", minimum=0,
                    maximum=2**31 - 1)
    eval_every: int = opt(100, "validate every N steps (0: only at the start and end)",
                          minimum=0, maximum=10**8)
    val_batches: int = opt(-1, "validation batches per evaluation (-1: the whole set)",
                           minimum=-1, maximum=10**6)
    patience: int = opt(0, "stop early after this many validations without improvement "
                        "(0: never)", minimum=0, maximum=10**6)
    baseline_prompts: int = opt(16, "before the first step, record the base model's validation "
                                "loss and its greedy answers to this many held-out prompts "
                                "(seeded sample) in the run record, for later comparisons "
                                "(0: off)", minimum=0, maximum=10000)
    save_every: int = opt(100, "write a resumable checkpoint every N steps", minimum=1,
                          maximum=10**8)
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep (plus the best)",
                                minimum=1, maximum=1000)
    report_every: int = opt(1, "emit a step event every N steps", minimum=1, maximum=10**6)
    quantize_base: int = opt(0, "quantize a full-precision base to 4 or 8 bits on load "
                             "(QLoRA; 0: no)", choices=[0, 4, 8])
    # Preference tuning (engine/train/preference.py); --method stays the adapter kind.
    objective: str = opt("sft", "what to learn: sft (imitate the answers), dpo (prefer chosen "
                         "over rejected against the base as reference) or orpo (SFT on chosen "
                         "plus an odds-ratio preference term, no reference); dpo and orpo "
                         "need prompt/chosen/rejected data", choices=["sft", "dpo", "orpo"])
    beta: float = opt(0.1, "DPO's beta: how far the trained model may move from the reference "
                      "(larger: stays closer)", minimum=0.0, maximum=100.0)
    label_smoothing: float = opt(0.0, "DPO label smoothing: the share of pairs assumed "
                                 "mislabelled (conservative DPO; 0: off)", minimum=0.0,
                                 maximum=0.5)
    orpo_lambda: float = opt(0.1, "ORPO's lambda: weight of the odds-ratio term beside the "
                             "SFT loss on the chosen answers", minimum=0.0, maximum=100.0)
    init_adapter: str = opt("", "start from this library adapter's weights (e.g. an SFT "
                            "adapter before DPO); recorded with the run. Its settings (rank, "
                            "targets, layers, method) must be this run's")

    def validate(self) -> "TrainConfig":
        problems = validate_ranges(self)
        if self.method == "full" and self.quantize_base:
            problems.append("full fine-tuning cannot train a quantized base; drop "
                            "--quantize-base or use lora")
        if self.method == "full" and self.lora_plus_active:
            problems.append("lora_plus_ratio applies to LoRA/DoRA adapters (their B matrices); "
                            "full fine-tuning has none: drop --lora-plus-ratio or use lora")
        if self.val_batches == 0:
            problems.append("val_batches = 0 would validate on nothing; use -1 (all) or 1 or more")
        if not self.targets.strip():
            problems.append("targets is empty")
        if self.objective != "sft" and self.pack:
            problems.append(f"{self.objective} scores whole answers: drop --pack")
        if problems:
            raise TailorError("invalid training settings: " + "; ".join(problems),
                              hint="see `tailor train --help` for each setting's range")
        return self

    @property
    def lora_plus_active(self) -> bool:
        """LoRA+ is on for any ratio but 0 and 1 (both mean: B at A's learning rate)."""
        return self.lora_plus_ratio not in (0.0, 1.0)

    @property
    def lora_scale(self) -> float:
        return self.alpha / (self.rank ** 0.5 if self.rslora else self.rank)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Settings a resumed run may change: they decide what is reported and kept on disk, never what
# is computed, so the resumed run still equals an uninterrupted one.
RESUME_FREE = ("save_every", "keep_checkpoints", "report_every")

# Why each other setting is fixed once a run has started (said when a resume changes it).
_ADAPTER = "it decides the adapter's shape or its function, which the checkpoint holds"
_OPTIMISER = "it is part of the optimisation the checkpoint is partway through"
_DATA = "it decides which examples, in which order, make each step"
_STOPPING = "it decides when validation and early stopping happen"
RESUME_FIXED_REASON = {
    "method": _ADAPTER, "rank": _ADAPTER, "alpha": _ADAPTER, "rslora": _ADAPTER,
    "dropout": _ADAPTER, "targets": _ADAPTER, "num_layers": _ADAPTER,
    "learning_rate": _OPTIMISER, "lora_plus_ratio": _OPTIMISER, "warmup": _OPTIMISER, "schedule": _OPTIMISER,
    "weight_decay": _OPTIMISER, "grad_clip": _OPTIMISER,
    "grad_checkpoint": "the step is compiled with or without it, and resume is exact only with "
                       "the same step",
    "epochs": "it sets the run's length, which the learning-rate schedule was built on",
    "iters": "it sets the run's length, which the learning-rate schedule was built on",
    "batch_size": _DATA, "grad_accumulation": _DATA, "max_seq_length": _DATA, "seed": _DATA,
    "pack": _DATA,
    "eval_every": _STOPPING, "val_batches": _STOPPING, "patience": _STOPPING,
    "quantize_base": "it changes the base weights the adapter was trained on",
    "objective": _OPTIMISER, "beta": _OPTIMISER, "label_smoothing": _OPTIMISER,
    "orpo_lambda": _OPTIMISER,
    "init_adapter": "the run started from that adapter's weights",
    "baseline_prompts": "the baseline is recorded once, before the run's first step, and a "
                        "resumed run keeps it",
}


def merge_resume_config(saved: "TrainConfig", overrides: dict, name: str = "") -> "TrainConfig":
    """The settings a resumed run uses: ``saved`` (from its checkpoint) with ``overrides``
    (the flags given now) applied. Only RESUME_FREE settings may differ from ``saved``; any
    other that does is refused, each named with its two values and why (TailorError).
    ``saved`` is not modified."""
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise TailorError(f"unknown training settings: {', '.join(unknown)}")
    changed = {k: v for k, v in overrides.items() if v != getattr(saved, k)}
    fixed = [k for k in changed if k not in RESUME_FREE]
    if fixed:
        what = "; ".join(f"{k} {getattr(saved, k)!r} -> {changed[k]!r} "
                         f"({RESUME_FIXED_REASON.get(k, 'it changes what is computed')})"
                         for k in fixed)
        raise TailorError(
            f"cannot resume {name!r} with changed settings: {what}",
            hint="resume with the original settings (only "
                 + ", ".join("--" + k.replace("_", "-") for k in RESUME_FREE)
                 + " may change), or start a new run under another name")
    return dataclasses.replace(saved, **changed).validate()


# Three starting points with plain names; any explicit flag overrides them.
PRESETS: dict[str, dict] = {
    "quick-style": {"rank": 8, "alpha": 16.0, "epochs": 1.0, "learning_rate": 2e-4,
                    "targets": "attention", "eval_every": 50},
    "balanced": {},
    "thorough": {"rank": 32, "alpha": 64.0, "epochs": 3.0, "learning_rate": 5e-5,
                 "eval_every": 50, "patience": 3},
}
PRESET_HELP = {
    "quick-style": "1 epoch, rank 8 on attention only: fast, for tone and format",
    "balanced": "the defaults: rank 16 on all linear layers, 2 epochs",
    "thorough": "rank 32, 3 epochs, lower learning rate, early stopping",
}


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    if preset and preset not in PRESETS:
        raise TailorError(f"unknown preset {preset!r}", hint="presets: " + ", ".join(PRESETS))
    values = {**PRESETS.get(preset or "balanced", {}), **overrides}
    try:
        return TrainConfig(**values).validate()
    except TypeError as e:
        raise TailorError(f"invalid training settings: {e}") from e
