"""Preference tuning on the SFT trainer: DPO (Rafailov et al. 2023) and ORPO (Hong et al. 2024).

A batch of B pairs is three passes (engine/train/pair_passes.py): the prompts both answers share,
computed once, then the chosen answers and the rejected answers, each padded to its own width;
``owner`` [B, K] per side says which row each trained position belongs to, so one matmul sums
each answer's token log-probabilities (chosen rows first, then rejected, in every [2B] vector).

DPO's reference model is the same weights with the adapter switched off (``adapters_off``:
every LoRA or DoRA layer computes only its base layer), so there is never a second copy of the
model in memory; with full fine-tuning it is the weights as they are before step 1. Either way
it is frozen, so each pair's reference log-probabilities are constant for the
whole run: the trainer computes them once before step 1 (``reference_logps``), keeps them in
the adapter folder (``REFERENCE_FILE``, reloaded on resume) and the batches carry them, so a
step runs only the policy pass. ORPO needs no reference. Each step's metrics are sums over
pairs (exact across micro-batches and validation batches), turned into means when a step or a
validation ends.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..events import Metrics, Progress, TailorError
from .batching import BatchStream
from .loop import History, Trainer
from .pair_passes import PairSide, collate_sides, pair_logps, shares_prompts
from ..models.token_loss import split_head

OBJECTIVES = ["sft", "dpo", "orpo"]
# DPO's cached reference log-probs, in the run's checkpoints folder (never copied to the library)
REFERENCE_FILE = "reference_logps.safetensors"
# The sums each loss returns, in this order (one vector, so the compiled step returns it).
SUMS = ("pairs", "loss", "correct", "decided", "margin", "chosen_logp", "rejected_logp",
        "odds_ratio", "nll", "nll_tokens")


# -- batches ------------------------------------------------------------------------------------
@dataclass
class PairBatch:
    """B pairs as engine/train/pair_passes.py's passes. The loop hands ``inputs``, ``targets``,
    ``index``, ``weight`` and ``segments`` to the loss unchanged: here each of the first four
    is a (chosen, rejected) pair of arrays (``weight``: the owner matrices), and ``segments``
    a dict of the shared prompt and, when cached, the reference log-probs."""
    chosen: PairSide
    rejected: PairSide
    prompt: mx.array | None         # [B, P] shared prompt tokens, padded after
    prompt_length: mx.array | None  # [B] their counts
    n_tokens: int
    n_trained: int
    reference: mx.array | None = None  # [2B] cached reference log-probs (chosen first)
    totals: dict | None = None  # a data-parallel rank's global batch counts (engine/train/
    #                             distributed.py's ShardedStream sets them)

    @property
    def inputs(self):
        return self.chosen.inputs, self.rejected.inputs

    @property
    def targets(self):
        return self.chosen.targets, self.rejected.targets

    @property
    def index(self):
        return self.chosen.index, self.rejected.index

    @property
    def weight(self):
        return self.chosen.owner, self.rejected.owner

    @property
    def segments(self) -> dict:
        out = {} if self.prompt is None else {"prompt": self.prompt,
                                              "prompt_length": self.prompt_length}
        if self.totals is not None:
            out["totals"] = {k: mx.array(v, dtype=mx.float32) for k, v in self.totals.items()}
        return out if self.reference is None else {**out, "reference": self.reference}


def collate_pairs(pairs, max_seq_length: int, pad_id: int = 0, reference=None,
                  share: bool = False) -> PairBatch:
    """B PreferencePairs -> one PairBatch; ``reference``: [B, 2] cached (chosen, rejected)
    reference log-probs of these pairs, or None; ``share``: compute the shared prompts once
    (``shares_prompts(model)``)."""
    prompt, length, chosen, rejected = collate_sides(pairs, max_seq_length, pad_id, share)
    n_tokens = sum(min(len(e.tokens), max_seq_length) for p in pairs
                   for e in (p.chosen, p.rejected) if min(len(e.tokens), max_seq_length) > 1)
    ref = None if reference is None else mx.array(
        np.concatenate([reference[:, 0], reference[:, 1]]).astype(np.float32))
    return PairBatch(chosen, rejected, prompt, length, n_tokens,
                     chosen.n_trained + rejected.n_trained, ref)


class PairStream(BatchStream):
    """BatchStream over pairs (bucketed by the chosen side's length); never packed.
    ``reference``: [N, 2] cached reference log-probs per pair, set before training;
    ``share``: the batches compute shared prompts once."""

    reference: np.ndarray | None = None
    share: bool = False

    def global_totals(self, units: list[int]) -> dict:
        """The counts a data-parallel rank's share of the batch ``units`` is normalised by:
        its pairs, and its chosen answers' trained tokens (ORPO's NLL)."""
        chosen = sum(sum(1 for m in e.chosen.loss_mask[1:min(len(e.chosen.tokens),
                                                                self.max_seq_length)] if m)
                     for e in (self.examples[i] for i in units))
        return {"pairs_total": float(len(units)), "chosen_tokens_total": float(chosen)}

    def _collate(self, units: list[int]) -> PairBatch:
        ref = None if self.reference is None else self.reference[units]
        return collate_pairs([self.examples[i] for i in units], self.max_seq_length,
                             self.pad_id, ref, self.share)


# -- the losses ---------------------------------------------------------------------------------
def log_sigmoid(x: mx.array) -> mx.array:
    return -mx.logaddexp(mx.zeros_like(x), -x)


_BASE_ONLY: dict = {}


def _base_only(cls):
    """A LoRA/DoRA layer subclass that calls only its base layer: the adapter's branch (and
    DoRA's magnitude) is not computed at all, so the layer is exactly the base's."""
    if cls not in _BASE_ONLY:
        class BaseOnly(cls):
            def __call__(self, x):
                return self.linear(x)

        _BASE_ONLY[cls] = BaseOnly
    return _BASE_ONLY[cls]


@contextmanager
def adapters_off(model):
    """Inside the block the model computes the base's values: LoRA and DoRA linear layers call
    only their base layer, other LoRA layers (experts, embeddings) have their scale at 0. With
    full fine-tuning there are none: the model is what it is (its reference is cached before
    the first step)."""
    from mlx_lm.tuner.dora import DoRALinear
    from mlx_lm.tuner.lora import LoRALinear

    layers = [m for _, m in model.named_modules() if hasattr(m, "lora_a")]
    saved = [(m.__class__, m.scale) for m in layers]
    try:
        for m in layers:
            if type(m) in (LoRALinear, DoRALinear):
                m.__class__ = _base_only(type(m))
            elif hasattr(m, "m"):  # a DoRA layer without a base-only path: scale 0 is not it
                raise TailorError(f"DPO cannot switch off the DoRA layer {type(m).__name__}",
                                  hint="use --method lora, or DoRA on linear layers only")
            else:
                m.scale = 0.0
        yield len(layers)
    finally:
        for m, (cls, scale) in zip(layers, saved):
            m.__class__, m.scale = cls, scale


def sequence_logps(model, split, inputs, targets, index, weight, segments):
    """(each row's summed log-probability of its trained tokens [2B], trained tokens [2B]),
    chosen rows first, from a PairBatch's loss arguments."""
    sides = list(zip(inputs, targets, index, weight))
    return pair_logps(model, split, segments.get("prompt"), segments.get("prompt_length"), sides)


def dpo_terms(policy, reference, beta: float, label_smoothing: float, totals=None):
    """(mean loss, SUMS vector) of DPO's sigmoid loss from summed log-probs [2B] (chosen
    first). Ties (margin exactly 0) are left out of the reward accuracy. ``totals``: a
    data-parallel rank's global batch counts (``pairs_total``): the loss is then this rank's
    part of the global batch's mean."""
    n = policy.shape[0] // 2
    pairs = n if totals is None else totals["pairs_total"]
    chosen_r = beta * (policy[:n] - reference[:n])
    rejected_r = beta * (policy[n:] - reference[n:])
    z = chosen_r - rejected_r
    losses = -(1 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)
    zero = mx.array(0.0)
    sums = mx.stack([mx.array(float(n)), losses.sum(), (z > 0).sum().astype(mx.float32),
                     (z != 0).sum().astype(mx.float32), z.sum(), policy[:n].sum(),
                     policy[n:].sum(), zero, zero, zero])
    return losses.sum() / pairs, sums


def orpo_terms(policy, counts, lam: float, totals=None):
    """(loss, SUMS vector) of ORPO: the chosen answers' token-mean NLL plus lam times the
    odds-ratio term -log sigmoid(log odds(chosen) - log odds(rejected)), the odds of an answer
    from its per-token mean log-probability. ``totals`` as for ``dpo_terms`` (and
    ``chosen_tokens_total``, the NLL's denominator)."""
    n = policy.shape[0] // 2
    mean = policy / mx.maximum(counts, 1.0)
    # log(1 - p) with p < 1: a mean log-prob of exactly 0 would give -inf
    log1m = mx.log1p(-mx.exp(mx.minimum(mean, -1e-7)))
    log_odds = (mean[:n] - mean[n:]) - (log1m[:n] - log1m[n:])
    ratio = log_sigmoid(log_odds)
    nll_sum, nll_tokens = -policy[:n].sum(), counts[:n].sum()
    pairs, tokens = (n, nll_tokens) if totals is None else (totals["pairs_total"],
                                                            totals["chosen_tokens_total"])
    loss = nll_sum / mx.maximum(tokens, 1.0) - lam * ratio.sum() / pairs
    margin = lam * (mean[:n] - mean[n:])
    sums = mx.stack([mx.array(float(n)), loss * pairs, (margin > 0).sum().astype(mx.float32),
                     (margin != 0).sum().astype(mx.float32), margin.sum(), mean[:n].sum(),
                     mean[n:].sum(), -ratio.sum(), nll_sum, nll_tokens])
    return loss, sums


def make_preference_loss(model, cfg):
    """``loss(model, inputs, targets, index, weight, segments) -> (loss, SUMS vector)`` for
    ``cfg.objective`` (dpo or orpo), the Trainer's loss signature on a PairBatch's fields."""
    split = split_head(model)

    def loss(model, inputs, targets, index, weight, segments):
        policy, counts = sequence_logps(model, split, inputs, targets, index, weight, segments)
        totals = segments.get("totals")
        if cfg.objective == "orpo":
            return orpo_terms(policy, counts, cfg.orpo_lambda, totals)
        reference = segments.get("reference")
        if reference is None:  # not cached: the reference pass runs here
            with adapters_off(model):
                reference, _ = sequence_logps(model, split, inputs, targets, index, weight,
                                              segments)
        return dpo_terms(policy, mx.stop_gradient(reference), cfg.beta, cfg.label_smoothing,
                         totals)

    return loss


def reference_logps(model, stream: PairStream, cancel=None, progress=None,
                    mine=lambda k: True) -> np.ndarray:
    """[N, 2] (chosen, rejected) summed reference log-probs of every pair of ``stream``: the
    base's values (adapters off, no dropout), in batches of similar length; ``progress(done,
    total)`` after each batch; cancellable between batches. ``mine(k)``: whether to compute
    batch k (a data-parallel rank computes its share; the others' rows stay 0)."""
    split = split_head(model)
    n = len(stream.examples)
    out = np.zeros((n, 2), dtype=np.float32)
    order = sorted(range(n), key=lambda i: stream.lengths[i])
    was_training = model.training
    model.eval()
    try:
        with adapters_off(model):
            for k, at in enumerate(range(0, n, stream.batch_size)):
                units = order[at:at + stream.batch_size]
                if not mine(k):
                    continue
                b = collate_pairs([stream.examples[i] for i in units], stream.max_seq_length,
                                  stream.pad_id, share=stream.share)
                logp, _ = sequence_logps(model, split, b.inputs, b.targets, b.index, b.weight,
                                         b.segments)
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
        for stream in (self.train, self.valid):
            if stream is not None:
                stream.share = shares_prompts(model)
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

        streams = {k: v for k, v in self._pair_streams().items() if v is not None}
        file = checkpoints_dir(self.adapter_dir) / REFERENCE_FILE
        kept = self._kept_reference(file, streams)
        if kept is None:
            kept = {}
            for split, stream in streams.items():
                def progress(done, total, split=split):
                    self.report(Progress(job=self.job, stage="reference", done=done,
                                         total=total, message=f"reference log-probabilities "
                                                              f"({split} pairs)"))
                kept[split] = self._reference_values(stream, progress)
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(file, overwrite=True) as tmp:
                save_safetensors(tmp, {k: mx.array(v) for k, v in kept.items()})
        for split, stream in streams.items():
            stream.reference = kept[split]

    def _pair_streams(self) -> dict:
        return {"train": self.train, "valid": self.valid}

    def _kept_reference(self, file, streams) -> dict | None:
        """A resumed run's kept values (None: compute them). A full fine-tuning run cannot
        compute them again: its weights have moved, so what they give is not its reference."""
        kept = _load_reference(file, streams) if self._resumed else None
        if kept is None and self._resumed and self.cfg.method == "full":
            raise TailorError(f"{file}: the reference log-probabilities of this full "
                              "fine-tuning DPO run are missing or do not match its data; they "
                              "were computed from the weights before step 1 and cannot be "
                              "computed again from the trained ones",
                              hint="start the run again under a new name")
        return kept

    def _reference_values(self, stream, progress) -> np.ndarray:
        return reference_logps(self.model, stream, self.cancel, progress)

    def _compiled_step(self):
        return self._recording(*super()._compiled_step())

    def _recording(self, state, step):
        """The step, keeping each micro-batch's metric sums for ``_flush``."""
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

    def _validation_loss(self) -> float:
        """Trainer.evaluate's pass (once per step: the baseline's and step 0's are one)."""
        self._val_metrics = summarize(self._valid_sums())
        return self._val_metrics["loss"]

    def _valid_sums(self, mine=lambda i: True) -> np.ndarray:
        """The SUMS of the validation batches (``mine(i)``: batch i is this rank's)."""
        self.model.eval()
        total = np.zeros(len(SUMS))
        for i, b in enumerate(self.valid.all_in_order()):
            if 0 <= self.cfg.val_batches <= i:
                break
            if not mine(i):
                continue
            _, sums = self.loss(self.model, b.inputs, b.targets, b.index, b.weight,
                               b.segments)
            total += np.array(sums)
            self.cancel.raise_if_cancelled()
        self.model.train()
        return total

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
