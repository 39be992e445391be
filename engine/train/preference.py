"""Preference tuning on the SFT trainer: DPO (Rafailov et al. 2023) and ORPO (Hong et al. 2024).

A batch of B pairs is one padded batch of 2B rows, the chosen answers first, then the rejected
ones (engine/train/batching.py's ``collate``), plus ``owner`` [2B, K]: which row each trained
position belongs to, so one matmul sums each answer's token log-probabilities.

DPO's reference model is the same weights with the adapter switched off (``adapters_off``:
every LoRA layer computes only its base layer), so there is never a second copy of the model in
memory. The base is frozen, so each pair's reference log-probabilities are constant for the
whole run: the trainer computes them once before step 1 (``reference_logps``), keeps them in
the adapter folder (``REFERENCE_FILE``, reloaded on resume) and the batches carry them, so a
step runs only the policy pass. ORPO needs no reference. Each step's metrics are sums over pairs (exact across micro-batches and validation
batches), turned into means when a step or a validation ends.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..events import Metrics, Progress, TailorError
from .batching import BatchStream, collate
from .loop import History, Trainer
from ..models.token_loss import split_head, trained_token_nll

OBJECTIVES = ["sft", "dpo", "orpo"]
# DPO's cached reference log-probs, in the run's checkpoints folder (never copied to the library)
REFERENCE_FILE = "reference_logps.safetensors"
# The sums each loss returns, in this order (one vector, so the compiled step returns it).
SUMS = ("pairs", "loss", "correct", "decided", "margin", "chosen_logp", "rejected_logp",
        "odds_ratio", "nll", "nll_tokens")


# -- batches ------------------------------------------------------------------------------------
@dataclass
class PairBatch:
    inputs: mx.array   # [2B, L]: chosen rows, then rejected rows
    targets: mx.array  # [2B*L]
    index: mx.array    # [K] trained flat positions (padded with 0)
    weight: mx.array   # [K] 1.0 real, 0.0 padding
    owner: mx.array    # [2B, K] 1.0 where trained position k is in row r
    n_tokens: int
    n_trained: int
    reference: mx.array | None = None  # [2B] cached reference log-probs (chosen first)

    @property
    def segments(self):
        """The loop hands a batch's ``segments`` to the loss unchanged: for pairs ``owner``,
        or ``(owner, reference)`` when the reference log-probs are cached."""
        return self.owner if self.reference is None else (self.owner, self.reference)


def collate_pairs(pairs, max_seq_length: int, pad_id: int = 0, reference=None) -> PairBatch:
    """B PreferencePairs -> one PairBatch of 2B rows; ``reference``: [B, 2] cached
    (chosen, rejected) reference log-probs of these pairs, or None."""
    b = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], max_seq_length, pad_id)
    width = b.inputs.shape[1]
    rows = np.array(b.index) // width
    weight = np.array(b.weight)
    owner = (rows[None, :] == np.arange(2 * len(pairs))[:, None]) * weight[None, :]
    ref = None if reference is None else mx.array(
        np.concatenate([reference[:, 0], reference[:, 1]]).astype(np.float32))
    return PairBatch(b.inputs, b.targets, b.index, b.weight, mx.array(owner.astype(np.float32)),
                     b.n_tokens, b.n_trained, ref)


class PairStream(BatchStream):
    """BatchStream over pairs (bucketed by the chosen side's length); never packed.
    ``reference``: [N, 2] cached reference log-probs per pair, set before training."""

    reference: np.ndarray | None = None

    def _collate(self, units: list[int]) -> PairBatch:
        ref = None if self.reference is None else self.reference[units]
        return collate_pairs([self.examples[i] for i in units], self.max_seq_length,
                             self.pad_id, ref)


# -- the losses ---------------------------------------------------------------------------------
def log_sigmoid(x: mx.array) -> mx.array:
    return -mx.logaddexp(mx.zeros_like(x), -x)


def _base_only(cls):
    """A LoRALinear subclass that calls only its base layer: the adapter's branch is not
    computed at all (times 0 it would add exactly nothing, at a cost)."""
    class BaseOnly(cls):
        def __call__(self, x):
            return self.linear(x)

    return BaseOnly


@contextmanager
def adapters_off(model):
    """Inside the block the model computes the base's values: plain LoRA layers call only
    their base layer, other LoRA layers (experts, embeddings) have their scale at 0."""
    from mlx_lm.tuner.lora import LoRALinear

    layers = [m for _, m in model.named_modules() if hasattr(m, "lora_a") and
              hasattr(m, "scale") and not hasattr(m, "m")]
    saved = [(m.__class__, m.scale) for m in layers]
    off = _base_only(LoRALinear)
    try:
        for m in layers:
            if type(m) is LoRALinear:
                m.__class__ = off
            else:
                m.scale = 0.0
        yield len(layers)
    finally:
        for m, (cls, scale) in zip(layers, saved):
            m.__class__, m.scale = cls, scale


def sequence_logps(model, body, head, inputs, targets, index, owner):
    """(each row's summed log-probability of its trained tokens [2B], trained tokens [2B])."""
    token = -trained_token_nll(model, inputs, targets, index, split=(body, head))
    return owner @ token, owner.sum(axis=1)


def dpo_terms(policy, reference, beta: float, label_smoothing: float):
    """(mean loss, SUMS vector) of DPO's sigmoid loss from summed log-probs [2B] (chosen
    first). Ties (margin exactly 0) are left out of the reward accuracy."""
    n = policy.shape[0] // 2
    chosen_r = beta * (policy[:n] - reference[:n])
    rejected_r = beta * (policy[n:] - reference[n:])
    z = chosen_r - rejected_r
    losses = -(1 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)
    zero = mx.array(0.0)
    sums = mx.stack([mx.array(float(n)), losses.sum(), (z > 0).sum().astype(mx.float32),
                     (z != 0).sum().astype(mx.float32), z.sum(), policy[:n].sum(),
                     policy[n:].sum(), zero, zero, zero])
    return losses.mean(), sums


def orpo_terms(policy, counts, lam: float):
    """(loss, SUMS vector) of ORPO: the chosen answers' token-mean NLL plus lam times the
    odds-ratio term -log sigmoid(log odds(chosen) - log odds(rejected)), the odds of an answer
    from its per-token mean log-probability."""
    n = policy.shape[0] // 2
    mean = policy / mx.maximum(counts, 1.0)
    # log(1 - p) with p < 1: a mean log-prob of exactly 0 would give -inf
    log1m = mx.log1p(-mx.exp(mx.minimum(mean, -1e-7)))
    log_odds = (mean[:n] - mean[n:]) - (log1m[:n] - log1m[n:])
    ratio = log_sigmoid(log_odds)
    nll_sum, nll_tokens = -policy[:n].sum(), counts[:n].sum()
    nll = nll_sum / mx.maximum(nll_tokens, 1.0)
    loss = nll - lam * ratio.mean()
    margin = lam * (mean[:n] - mean[n:])
    sums = mx.stack([mx.array(float(n)), loss * n, (margin > 0).sum().astype(mx.float32),
                     (margin != 0).sum().astype(mx.float32), margin.sum(), mean[:n].sum(),
                     mean[n:].sum(), -ratio.sum(), nll_sum, nll_tokens])
    return loss, sums


def make_preference_loss(model, cfg):
    """``loss(model, inputs, targets, index, weight, owner) -> (loss, SUMS vector)`` for
    ``cfg.objective`` (dpo or orpo), the Trainer's loss signature."""
    body, head = split_head(model)

    def loss(model, inputs, targets, index, weight, segments):
        # segments: owner (the reference pass runs here), or (owner, cached reference)
        owner, reference = segments if isinstance(segments, tuple) else (segments, None)
        policy, counts = sequence_logps(model, body, head, inputs, targets, index, owner)
        if cfg.objective == "orpo":
            return orpo_terms(policy, counts, cfg.orpo_lambda)
        if reference is None:
            with adapters_off(model):
                reference, _ = sequence_logps(model, body, head, inputs, targets, index, owner)
        return dpo_terms(policy, mx.stop_gradient(reference), cfg.beta, cfg.label_smoothing)

    return loss


def reference_logps(model, stream: PairStream, cancel=None, progress=None) -> np.ndarray:
    """[N, 2] (chosen, rejected) summed reference log-probs of every pair of ``stream``: the
    base's values (adapters off, no dropout), in batches of similar length; ``progress(done,
    total)`` after each batch; cancellable between batches."""
    body, head = split_head(model)
    n = len(stream.examples)
    out = np.zeros((n, 2), dtype=np.float32)
    order = sorted(range(n), key=lambda i: stream.lengths[i])
    was_training = model.training
    model.eval()
    try:
        with adapters_off(model):
            for at in range(0, n, stream.batch_size):
                units = order[at:at + stream.batch_size]
                b = collate_pairs([stream.examples[i] for i in units], stream.max_seq_length,
                                  stream.pad_id)
                logp, _ = sequence_logps(model, body, head, b.inputs, b.targets, b.index,
                                         b.owner)
                logp = np.array(logp)
                out[units, 0], out[units, 1] = logp[:len(units)], logp[len(units):]
                if cancel is not None:
                    cancel.raise_if_cancelled()
                if progress is not None:
                    progress(at + len(units), n)
    finally:
        model.train(was_training)
    return out


def summarize(sums) -> dict:
    """Means of a SUMS vector: loss, reward accuracy (None when every pair tied), margin,
    log-probs; nll and odds_ratio for ORPO."""
    s = dict(zip(SUMS, (float(x) for x in sums)))
    n = max(s["pairs"], 1.0)
    out = {"loss": s["loss"] / n,
           "reward_accuracy": s["correct"] / s["decided"] if s["decided"] else None,
           "reward_ties": int(s["pairs"] - s["decided"]), "reward_margin": s["margin"] / n,
           "chosen_logp": s["chosen_logp"] / n, "rejected_logp": s["rejected_logp"] / n}
    if s["nll_tokens"]:
        out.update(nll=s["nll"] / s["nll_tokens"], odds_ratio=s["odds_ratio"] / n)
    return out


# -- the trainer --------------------------------------------------------------------------------
@dataclass
class PreferenceHistory(History):
    metrics: dict = field(default_factory=lambda: {"train": [], "valid": []})

    def to_dict(self) -> dict:
        return {**super().to_dict(), "metrics": self.metrics}


class PreferenceTrainer(Trainer):
    """The SFT Trainer (loop, checkpoints, exact resume) with pair batches, a preference loss
    and per-step / per-validation metrics (Metrics events, kept in the history)."""

    def __init__(self, model, cfg, train, valid, **kw):
        super().__init__(model, cfg, train, valid, **kw)
        pad_id = kw.get("pad_id", 0)
        self.train = PairStream(train, cfg.batch_size, cfg.max_seq_length, cfg.seed, pad_id)
        self.valid = PairStream(valid, cfg.batch_size, cfg.max_seq_length, cfg.seed,
                                pad_id) if valid else None
        self.loss = make_preference_loss(model, cfg)
        self.history = PreferenceHistory()
        self._pending: list = []  # this step's micro-batch sums, not yet read back
        self._val_metrics: dict = {}
        self._resumed = False

    def restore(self, loaded) -> None:
        super().restore(loaded)
        self.history = PreferenceHistory.from_dict(loaded.state.get("history", {}))
        self._resumed = True

    def run(self):
        if self.cfg.objective == "dpo":
            self.prepare_reference()
        return super().run()

    def prepare_reference(self) -> None:
        """Every pair's reference log-probs, once per run: reloaded on resume (the values the
        run started with), else computed (Progress events, cancellable) and kept."""
        from ..atomic import atomic_path, save_safetensors
        from .checkpoint import checkpoints_dir

        streams = {"train": self.train, "valid": self.valid}
        streams = {k: v for k, v in streams.items() if v is not None}
        file = checkpoints_dir(self.adapter_dir) / REFERENCE_FILE
        kept = _load_reference(file, streams) if self._resumed else None
        if kept is None:
            kept = {}
            for split, stream in streams.items():
                def progress(done, total, split=split):
                    self.report(Progress(job=self.job, stage="reference", done=done,
                                         total=total, message=f"reference log-probabilities "
                                                              f"({split} pairs)"))
                kept[split] = reference_logps(self.model, stream, self.cancel, progress)
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(file, overwrite=True) as tmp:
                save_safetensors(tmp, {k: mx.array(v) for k, v in kept.items()})
        for split, stream in streams.items():
            stream.reference = kept[split]

    def _compiled_step(self):
        state, step = super()._compiled_step()

        def recording(*args):
            self._flush()
            loss, sums, grad = step(*args)
            self._pending.append(sums)
            return loss, sums, grad

        return state, recording

    def _flush(self) -> None:
        """A finished step's metrics into the history (and a Metrics event when reported)."""
        if len(self._pending) < self.cfg.grad_accumulation:
            return
        total = sum(np.array(s) for s in self._pending)
        self._pending = []
        values = summarize(total)
        self.history.metrics["train"].append([self.step, values])
        if self.step % self.cfg.report_every == 0 or self.step == self.steps:
            self.report(Metrics(job=self.job, iteration=self.step, split="train",
                                values=values))

    def _save(self) -> str:
        self._flush()
        return super()._save()

    def evaluate(self) -> float:
        self.model.eval()
        total = np.zeros(len(SUMS))
        for i, b in enumerate(self.valid.all_in_order()):
            if 0 <= self.cfg.val_batches <= i:
                break
            _, sums = self.loss(self.model, b.inputs, b.targets, b.index, b.weight,
                               b.segments)
            total += np.array(sums)
            self.cancel.raise_if_cancelled()
        self.model.train()
        self._val_metrics = summarize(total)
        return self._val_metrics["loss"]

    def _validate(self) -> bool:
        self._flush()
        stop = super()._validate()
        if self.valid is not None:
            self.history.metrics["valid"].append([self.step, self._val_metrics])
            self.report(Metrics(job=self.job, iteration=self.step, split="valid",
                                values=self._val_metrics))
        return stop


def _load_reference(file, streams) -> dict | None:
    """The kept reference log-probs when ``file`` holds one [N, 2] array per stream, else None
    (then they are computed again: the same values, the base being unchanged)."""
    try:
        arrays = mx.load(str(file))
    except (OSError, ValueError, RuntimeError):
        return None
    out = {k: np.array(arrays[k]) for k in streams if k in arrays}
    if len(out) != len(streams) or any(out[k].shape != (len(s.examples), 2)
                                       for k, s in streams.items()):
        return None
    return out


def trainer_class(cfg):
    return PreferenceTrainer if cfg.objective in ("dpo", "orpo") else Trainer


def check_objective(cfg, schema: str, data: str) -> None:
    """The objective and the dataset's schema must match (TailorError naming both)."""
    pairs = schema == "preference"
    if cfg.objective in ("dpo", "orpo") and not pairs:
        raise TailorError(f"{data}: --objective {cfg.objective} needs preference pairs "
                          f"(prompt, chosen, rejected); this dataset is {schema}",
                          hint="give a dataset of prompt/chosen/rejected records, or use "
                               "--objective sft")
    if cfg.objective == "sft" and pairs:
        raise TailorError(f"{data}: this dataset holds preference pairs (prompt, chosen, "
                          "rejected)", hint="train it with --objective dpo or --objective orpo")


def load_init_adapter(net, cfg, base_sha256: str, library_dir=None) -> dict:
    """Start from the library adapter ``cfg.init_adapter`` (its weights into ``net``'s
    adapters); -> the record kept with the run. TailorError when it is missing, was trained on
    another base, or has another shape."""
    from .. import library
    from ..atomic import sha256_file
    from .adapters import trainable_weights

    info = library.get_adapter(cfg.init_adapter, library_dir)
    if (info.manifest.get("base_model") or {}).get("sha256") != base_sha256:
        raise TailorError(f"--init-adapter {cfg.init_adapter!r} was trained on another base "
                          "model", hint="start from an adapter of this base, or give its base "
                                        "with --model")
    file = info.path / "adapters.safetensors"
    weights = mx.load(str(file))
    mine = trainable_weights(net)
    if {k: tuple(v.shape) for k, v in weights.items()} != \
            {k: tuple(v.shape) for k, v in mine.items()}:
        s = info.manifest.get("settings") or {}
        raise TailorError(f"--init-adapter {cfg.init_adapter!r} has another shape than this "
                          "run's adapter", hint=f"use its settings: --rank {s.get('rank')} "
                          f"--targets {s.get('targets')} --num-layers {s.get('num_layers')} "
                          f"--method {s.get('method')}")
    net.load_weights(list(weights.items()), strict=False)
    mx.eval(net.parameters())
    return {"name": cfg.init_adapter, "path": str(info.path), "sha256": sha256_file(file)}
