"""Tailor's training loop: compiled step, bucketed batches, events, checkpoints, stop/resume.

Read it top to bottom: ``Trainer.run`` validates, steps, reports, checkpoints and validates
again until the step budget, an early stop, a cancel or a non-finite loss. Data order and
dropout randomness are pure functions of (seed, micro-batch), so a resumed run repeats an
uninterrupted one exactly.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_map

from ..events import (Cancelled, CancelToken, Checkpoint, ErrorCode, Reporter, Step,
                      TailorError, Validation, null_reporter)
from . import checkpoint as ckpt
from .adapters import trainable_weights
from .batching import Batch, BatchStream
from .config import TrainConfig
from .loss import make_loss


class NonFiniteLoss(TailorError):
    code = ErrorCode.DIVERGED

    def __init__(self, step: int, value: float, checkpoint: str):
        kept = (f"the last finite checkpoint ({checkpoint}) was kept" if checkpoint
                else "no checkpoint had been written yet")
        super().__init__(f"the training loss became {value} at step {step}; training stopped "
                         f"and {kept}",
                         hint="lower the learning rate, enable gradient clipping, or check the "
                              "data for broken examples")
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class History:
    train: list = field(default_factory=list)   # [[step, loss], ...]
    valid: list = field(default_factory=list)
    best_val_loss: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    trained_tokens: int = 0

    def to_dict(self) -> dict:
        return {"train": self.train, "valid": self.valid, "best_val_loss": self.best_val_loss,
                "best_step": self.best_step, "bad_validations": self.bad_validations,
                "trained_tokens": self.trained_tokens}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class LoopResult:
    step: int
    stopped_early: bool
    history: History
    last_checkpoint: str


def apply_update(model, optimizer, grad, accum: int, grad_clip: float):
    """One optimizer step from gradients summed over ``accum`` micro-batches (averaged, then
    clipped to ``grad_clip`` when > 0); returns None, the cleared accumulator. Shared by the
    single-process and the data-parallel step so both update alike."""
    if accum > 1:
        grad = tree_map(lambda g: g / accum, grad)
    if grad_clip > 0:
        grad, _ = optim.clip_grad_norm(grad, grad_clip)
    optimizer.update(model, grad)
    return None


def total_steps(cfg: TrainConfig, n_units: int) -> int:
    """Optimizer steps of the run; ``n_units``: training examples, or packed rows."""
    if cfg.iters:
        return cfg.iters
    per_epoch = math.ceil(n_units / cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accumulation))


def build_schedule(cfg: TrainConfig, steps: int):
    warm = int(round(cfg.warmup * steps))
    if cfg.schedule == "constant":
        main = lambda step: mx.array(cfg.learning_rate)  # noqa: E731
    else:
        main = optim.cosine_decay(cfg.learning_rate, max(1, steps - warm), 0.0)
    if warm <= 0:
        return main
    return optim.join_schedules([optim.linear_schedule(0.0, cfg.learning_rate, warm), main],
                                [warm])


def is_lora_b(path: str, _value=None) -> bool:
    """A LoRA/DoRA B matrix (mlx-lm names it ``lora_b`` in every adapter layer)."""
    return path.rsplit(".", 1)[-1] == "lora_b"


def build_optimizer(cfg: TrainConfig, schedule):
    """AdamW on ``schedule``. With LoRA+ the B matrices get their own AdamW on ratio x the
    schedule (weight decay included, as in the paper); A matrices and DoRA's magnitudes keep the
    base rate: a magnitude is a per-output scale that starts at the weight's norm, not a
    zero-initialised feature matrix, so LoRA+'s argument for larger steps does not cover it."""
    def adamw(learning_rate):
        return optim.AdamW(learning_rate=learning_rate, weight_decay=cfg.weight_decay)

    if not cfg.lora_plus_active:
        return adamw(schedule)
    ratio = cfg.lora_plus_ratio
    return optim.MultiOptimizer([adamw(lambda step: ratio * schedule(step)), adamw(schedule)],
                                [is_lora_b])


def micro_seed(seed: int, micro: int) -> int:
    """The dropout RNG seed of micro-batch ``micro``: a pure function, so resume is exact."""
    return (seed * 1_000_003 + micro * 7919 + 12345) % (2**63)


_CHECKPOINTED: set[type] = set()


def _checkpoint_blocks(model) -> None:
    """mlx-lm's grad_checkpoint patches the block *class*; patch each class once per process
    (a second patch would nest checkpoints). Unpatched blocks compute the same values."""
    from mlx_lm.tuner.trainer import grad_checkpoint

    cls = type(model.layers[0])
    if cls not in _CHECKPOINTED:
        grad_checkpoint(model.layers[0])
        _CHECKPOINTED.add(cls)


# MLX keeps freed buffers for reuse, by default up to its whole memory limit. Batches of many
# lengths free buffers of many sizes, which then sit in that cache beside the live ones. On
# bench/train_vs_mlx_lm.py's long-answer mix (40 chats, one epoch, two runs side by side) the
# peak resident memory was 565.7 MB with a 64 MB cache and 431.2 MB with none, at the same CPU
# time (61.7 s both; mlx-lm: 523.6 MB); 12 chats: 463.0 MB default, 432.3 MB none. Measured on
# MLX's CPU backend; a Mac GPU's allocator is not measured here.
TRAIN_CACHE_LIMIT = 0


class Trainer:
    """Trains ``model`` (adapters already applied) on ``train``; see module doc."""

    def __init__(self, model, cfg: TrainConfig, train, valid, *, adapter_dir: Path,
                 run_state: dict, report: Reporter = null_reporter,
                 cancel: CancelToken | None = None, job: str = "train", pad_id: int = 0,
                 batch_hook: Callable[[int, Batch], Batch] | None = None,
                 on_checkpoint: Callable[[int, History], None] | None = None):
        self.model, self.cfg = model, cfg
        self.adapter_dir = adapter_dir
        self.run_state = run_state  # hashes, shapes: copied into every checkpoint
        self.report, self.cancel, self.job = report, cancel or CancelToken(), job
        self.batch_hook = batch_hook  # fault injection (tests): may alter batch m
        self.on_checkpoint = on_checkpoint
        self.train = BatchStream(train, cfg.batch_size, cfg.max_seq_length, cfg.seed, pad_id,
                                 pack=cfg.pack)
        self.valid = BatchStream(valid, cfg.batch_size, cfg.max_seq_length, cfg.seed, pad_id,
                                 pack=cfg.pack) if valid else None
        self.steps = total_steps(cfg, self.train.n_units)
        self.schedule = build_schedule(cfg, self.steps)
        self.optimizer = build_optimizer(cfg, self.schedule)
        self.optimizer.init(model.trainable_parameters())
        self.loss = make_loss(model)
        self.history = History()
        self.step = 0
        self.last_checkpoint = ""

    # -- state -----------------------------------------------------------------------------
    def restore(self, loaded: ckpt.LoadedCheckpoint) -> None:
        """Continue from a checkpoint (weights, optimizer, step, history, RNG)."""
        self.model.load_weights(list(loaded.weights.items()), strict=False)
        self.optimizer.state = loaded.optimizer
        self.step = int(loaded.state["step"])
        self.history = History.from_dict(loaded.state.get("history", {}))
        # no RNG state to restore: dropout is reseeded from (seed, micro-batch) before each step
        self.last_checkpoint = str(loaded.path)
        self._evaluated = None
        mx.eval(self.model.parameters(), self.optimizer.state)

    def _save(self) -> str:
        state = {"step": self.step, "micro": self.step * self.cfg.grad_accumulation,
                 "epoch": self._epoch(self.step), "rng_key": ckpt.rng_key(),
                 "config": self.cfg.to_dict(), "history": self.history.to_dict(),
                 "total_steps": self.steps, **self.run_state}
        path = ckpt.save_checkpoint(self.adapter_dir, self.step, trainable_weights(self.model),
                                    self.optimizer.state, state, self.cfg.keep_checkpoints)
        self.last_checkpoint = str(path)
        self.report(Checkpoint(job=self.job, iteration=self.step, path=str(path)))
        if self.on_checkpoint:
            self.on_checkpoint(self.step, self.history)
        return str(path)

    def _epoch(self, step: int) -> float:
        return step * self.cfg.grad_accumulation / self.train.per_epoch

    # -- pieces ----------------------------------------------------------------------------
    def _compiled_step(self):
        model, optimizer, cfg = self.model, self.optimizer, self.cfg
        loss_and_grad = __import__("mlx.nn", fromlist=["nn"]).value_and_grad(model, self.loss)
        accum = cfg.grad_accumulation
        state = [model.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(inputs, targets, index, weight, segments, prev_grad, do_update):
            (loss, n), grad = loss_and_grad(model, inputs, targets, index, weight, segments)
            if prev_grad is not None:
                grad = tree_map(lambda a, b: a + b, grad, prev_grad)
            if do_update:
                grad = apply_update(model, optimizer, grad, accum, cfg.grad_clip)
            return loss, n, grad

        return state, step

    def evaluate(self) -> float:
        """The validation loss of the weights at ``self.step``. Computed once per step: the run
        record's baseline (engine/evaluate/baseline.py) asks for it before step 1, and the
        step-0 validation then reuses that value instead of a second pass."""
        if self._evaluated is None or self._evaluated[0] != self.step:
            # the weights change only with the step (or restore, which forgets this)
            self._evaluated = (self.step, self._validation_loss())
        return self._evaluated[1]

    def _validation_loss(self) -> float:
        """One pass over the validation batches (subclasses: their own loss, same caching)."""
        self.model.eval()
        total, count = mx.array(0.0), mx.array(0.0)
        for i, b in enumerate(self.valid.all_in_order()):
            if 0 <= self.cfg.val_batches <= i:
                break
            loss, n = self.loss(self.model, b.inputs, b.targets, b.index, b.weight, b.segments)
            total, count = total + loss * n, count + n
            mx.eval(total, count)
            self.cancel.raise_if_cancelled()
        self.model.train()
        return (total / mx.maximum(count, 1.0)).item()

    def _validate(self) -> bool:
        """Validate, track the best; True when patience ran out."""
        if self.valid is None:
            return False
        val = self.evaluate()
        h = self.history
        h.valid.append([self.step, val])
        is_best = math.isfinite(val) and (h.best_val_loss is None or val < h.best_val_loss)
        if is_best:
            h.best_val_loss, h.best_step, h.bad_validations = val, self.step, 0
            if self.step > 0:
                ckpt.save_best(self.adapter_dir, trainable_weights(self.model),
                               {"step": self.step, "val_loss": val})
        elif self.step > 0:
            h.bad_validations += 1
        self.report(Validation(job=self.job, iteration=self.step, val_loss=val,
                               best_val_loss=h.best_val_loss if h.best_val_loss is not None
                               else val, is_best=is_best))
        return bool(self.cfg.patience and h.bad_validations >= self.cfg.patience)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> LoopResult:
        previous_cache_limit = mx.set_cache_limit(TRAIN_CACHE_LIMIT)
        try:
            return self._run()
        except Cancelled as e:
            # a stop during validation or between steps: make sure the latest step is saved
            if not getattr(e, "checkpoint", "") and self.step > 0:
                e.checkpoint = self._save() if self.last_checkpoint_step() != self.step \
                    else self.last_checkpoint
            raise
        finally:
            mx.set_cache_limit(previous_cache_limit)

    def _run(self) -> LoopResult:
        cfg, model = self.cfg, self.model
        if cfg.grad_checkpoint:
            _checkpoint_blocks(model)
        model.train()
        state, step_fn = self._compiled_step()
        if self.step == 0 and self.valid is not None:
            self._validate()
        stopped_early = False
        train_time, window_tokens, window_time = 0.0, 0, 0.0
        losses_since_report: list[float] = []
        while self.step < self.steps:
            if self.cancel.requested:
                saved = self._save() if self.last_checkpoint_step() != self.step else \
                    self.last_checkpoint
                e = Cancelled(f"stopped at step {self.step}; resume with "
                              f"`tailor train --resume {self.adapter_dir.name}`")
                e.checkpoint = saved
                raise e
            tic = time.perf_counter()
            grad, losses, n_tok, n_trained = None, [], 0, 0
            for a in range(cfg.grad_accumulation):
                micro = self.step * cfg.grad_accumulation + a
                batch = self.train.batch(micro)
                if self.batch_hook is not None:
                    batch = self.batch_hook(micro, batch)
                mx.random.seed(micro_seed(cfg.seed, micro))
                last = a == cfg.grad_accumulation - 1
                loss, _, grad = step_fn(batch.inputs, batch.targets, batch.index,
                                        batch.weight, batch.segments, grad, last)
                # one sync per micro-batch: it bounds memory and gives us the loss to check
                mx.eval(state, loss, grad)
                losses.append(loss.item())
                n_tok += batch.n_tokens
                n_trained += batch.n_trained
            self.step += 1
            dt = time.perf_counter() - tic
            train_time += dt
            window_time += dt
            window_tokens += n_tok
            step_loss = sum(losses) / len(losses)
            if not all(math.isfinite(x) for x in losses):
                raise NonFiniteLoss(self.step, step_loss, self.last_checkpoint)
            self.history.train.append([self.step, step_loss])
            self.history.trained_tokens += n_trained
            losses_since_report.append(step_loss)
            if self.step % cfg.report_every == 0 or self.step == self.steps:
                remaining = (self.steps - self.step) * train_time / max(1, self._steps_run)
                self.report(Step(
                    job=self.job, iteration=self.step, total_iterations=self.steps,
                    epoch=round(self._epoch(self.step), 4),
                    train_loss=sum(losses_since_report) / len(losses_since_report),
                    learning_rate=float(self.schedule(self.step - 1).item()),
                    tokens_per_second=window_tokens / max(window_time, 1e-9),
                    trained_tokens=self.history.trained_tokens,
                    peak_memory_gb=mx.get_peak_memory() / 1e9, eta_seconds=remaining))
                losses_since_report, window_tokens, window_time = [], 0, 0.0
            self._steps_run += 1
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.steps:
                if self._validate():
                    stopped_early = True
            if (self.step % cfg.save_every == 0 and self.step < self.steps) or stopped_early:
                self._save()
            if stopped_early:
                break
        if not stopped_early and self.valid is not None:
            self._validate()
        self._save() if self.last_checkpoint_step() != self.step else None
        return LoopResult(self.step, stopped_early, self.history, self.last_checkpoint)

    _steps_run = 0
    _evaluated: tuple[int, float] | None = None  # (step, validation loss) of evaluate()

    def last_checkpoint_step(self) -> int:
        name = Path(self.last_checkpoint).name if self.last_checkpoint else ""
        return int(name.split("-")[1]) if name.startswith("step-") else -1
