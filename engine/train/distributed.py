"""Data-parallel training on MLX's distributed engine (``mx.distributed``, ring or MPI backend,
started by ``mlx.launch``; see engine/train/launch.py).

Every rank holds the whole model. Micro-batch ``m`` of a run is the same global batch whatever
the number of ranks (engine/train/batching.py); rank ``r`` of ``R`` trains the examples
``r, r + R, ...`` of it. Each rank's gradient of its own token-mean loss is weighted by its share
of the global batch's trained tokens and the weighted gradients are summed across ranks, so a
step on R ranks of batch b is the step one process makes on batch R x b (up to float rounding).
Validation is sharded the same way and summed. Rank 0 alone writes checkpoints, the manifest and
events; the others train in silence. All ranks agree on every stop: the loss and validation loss
are global values, and a cancel on any rank is summed into the next batch's token counts.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..events import Cancelled, CancelToken, TailorError
from .adapters import trainable_weights
from .batching import Batch
from .loop import Trainer, apply_update

# a rank whose peer is gone and that is not out within this many seconds of the launcher's
# SIGTERM exits anyway (a blocked receive must not keep a dead run alive)
TERMINATE_GRACE_S = 20.0

_GROUP = None


def rank_environment() -> bool:
    """True in a process started by mlx.launch (it sets MLX_RANK for every backend)."""
    return "MLX_RANK" in os.environ


def group():
    """This process's distributed group, or None when it runs alone."""
    global _GROUP
    if _GROUP is None and rank_environment():
        try:
            _GROUP = mx.distributed.init(strict=True)
        except RuntimeError as e:
            raise TailorError(f"cannot join the distributed run: {e}",
                              hint="start several ranks with tailor train --ranks N or "
                                   "--hosts; check the hosts can reach each other") from None
    return _GROUP if _GROUP is not None and _GROUP.size() > 1 else None


def world() -> tuple[int, int]:
    """(rank, number of ranks); (0, 1) alone."""
    g = group()
    return (g.rank(), g.size()) if g is not None else (0, 1)


def is_peer_lost(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and ("[ring]" in text or "[mpi]" in text
                                            or "peer" in text)


class RankLost(TailorError):
    def __init__(self, detail: str, checkpoint: str, name: str):
        kept = (f"the last complete checkpoint is {checkpoint}" if checkpoint
                else "no checkpoint had been written yet")
        super().__init__(f"another rank of the distributed run stopped ({detail}); training "
                         f"ended and {kept}",
                         hint=f"continue on this machine alone with `tailor train --resume "
                              f"{name}`, or with the same --ranks/--hosts")


def broadcast_array(x: mx.array, g) -> mx.array:
    """Rank 0's ``x`` on every rank (a sum where the other ranks add zeros)."""
    return mx.distributed.all_sum(x if g.rank() == 0 else mx.zeros_like(x), group=g)


def broadcast_json(obj, g):
    """Rank 0's JSON-able ``obj`` on every rank."""
    data = np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8) if g.rank() == 0 \
        else np.zeros(0, dtype=np.uint8)
    n = int(broadcast_array(mx.array([len(data)], dtype=mx.int32), g).item())
    buf = np.zeros(n, dtype=np.int32)
    buf[:len(data)] = data
    out = np.array(broadcast_array(mx.array(buf), g)).astype(np.uint8)
    return json.loads(out.tobytes().decode("utf-8"))


class ShardedStream:
    """This rank's share of every global micro-batch of ``stream`` (a BatchStream).

    The Batch ``batch(m)`` returns carries the global batch's token counts (so the loop's
    accounting stays global; every rank counts them from its own copy of the data, without
    a message) and sets ``scale``, this rank's share of the trained tokens. A stop asked on
    any rank is summed with the previous micro-batch's loss (DistributedTrainer's step), so
    every rank sees it at the same micro-batch and stops there."""

    def __init__(self, stream, g, trainer: "DistributedTrainer"):
        self.stream, self.group, self.trainer = stream, g, trainer
        self.scale = 1.0
        self.micro = 0

    def __getattr__(self, name):  # n_units, per_epoch, examples, padding(): the global ones
        return getattr(self.stream, name)

    def unit_counts(self, unit: int) -> tuple[int, int]:
        """(tokens, trained tokens) of one example, packed row or preference pair (both
        sides), as collate counts them."""
        s = self.stream
        members = s.rows[unit] if s.rows is not None else [unit]
        tokens = trained = 0
        for i in members:
            e = s.examples[i]
            for side in (e.chosen, e.rejected) if hasattr(e, "rejected") else (e,):
                n = min(len(side.tokens), s.max_seq_length)
                if n > 1:
                    tokens += n
                    trained += sum(1 for m in side.loss_mask[1:n] if m)
        return tokens, trained

    def batch(self, micro: int) -> Batch:
        self.trainer.raise_if_stop_agreed()
        g = self.group
        units = self.stream.indices(micro)
        mine = units[g.rank()::g.size()]
        local = self.stream._collate(mine or units[:1])  # none: a stand-in weighted 0
        n_tokens = n_trained = 0
        for u in units:
            t, k = self.unit_counts(u)
            n_tokens, n_trained = n_tokens + t, n_trained + k
        self.micro = micro
        mine_trained = local.n_trained if mine else 0
        self.scale = mine_trained / n_trained if n_trained else 0.0
        if hasattr(self.stream, "global_totals"):  # pairs: the loss takes the global counts
            local.totals = self.stream.global_totals(units)
            self.scale = 1.0 if mine else 0.0
        local.n_tokens, local.n_trained = n_tokens, n_trained
        return local


class DistributedTrainer(Trainer):
    """Trainer (engine/train/loop.py) on one rank of a data-parallel run; see module doc."""

    def __init__(self, model, cfg, train, valid, *, cancel: CancelToken | None = None,
                 adapter_dir: Path, **kwargs):
        self.group = group()
        if self.group is None:
            raise TailorError("a distributed trainer needs a distributed run (several ranks)")
        self.rank, self.size = self.group.rank(), self.group.size()
        self.name = adapter_dir.name
        self._scratch = None
        if self.rank != 0:  # anything the loop writes goes to a private folder, then away
            self._scratch = tempfile.TemporaryDirectory(prefix="tailor-rank-")
            adapter_dir = Path(self._scratch.name) / adapter_dir.name
        if cfg.batch_size < self.size:
            raise TailorError(f"--batch-size {cfg.batch_size} is smaller than the number of "
                              f"ranks ({self.size}): every rank needs an example per batch",
                              hint=f"use --batch-size {self.size} or more (the global batch, "
                                   "split across the ranks)")
        # the loop sees a private token, set only when every rank agreed to stop
        super().__init__(model, cfg, train, valid, adapter_dir=adapter_dir,
                         cancel=CancelToken(), **kwargs)
        self.user_cancel = cancel or CancelToken()
        self.train = ShardedStream(self.train, self.group, self)
        self._collective = False
        self._stop_votes = None  # the ranks asking to stop, summed with the last loss

    def raise_if_stop_agreed(self) -> None:
        if self._stop_votes is not None and self._stop_votes.item() > 0:
            reason = self.user_cancel.reason or "stop requested"
            self.cancel.cancel(reason)
            raise Cancelled(f"stopped at step {self.step}; resume with "
                            f"`tailor train --resume {self.name}`")

    # -- the compiled step: weighted, summed gradients -------------------------------------
    def _compiled_step(self):
        model, optimizer, cfg, g = self.model, self.optimizer, self.cfg, self.group
        loss_and_grad = nn.value_and_grad(model, self.loss)
        accum, size = cfg.grad_accumulation, self.size
        state = [model.state, optimizer.state, mx.random.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(inputs, targets, index, weight, segments, share, stop, prev_grad, do_update):
            (loss, n), grad = loss_and_grad(model, inputs, targets, index, weight, segments)
            # x size: average_gradients divides by the number of ranks (exact for powers of 2)
            grad = tree_map(lambda x: x * (share * size), grad)
            if prev_grad is not None:
                grad = tree_map(lambda a, b: a + b, grad, prev_grad)
            # n (trained tokens, or a preference loss's metric sums) summed in the same message
            summed = mx.distributed.all_sum(mx.concatenate(
                [mx.stack([loss * share, stop]), (n * (share > 0)).reshape(-1)]), group=g)
            loss, votes, n = summed[0], summed[1], summed[2:].reshape(n.shape)
            if do_update:
                grad = apply_update(model, optimizer, nn.average_gradients(grad, group=g),
                                    accum, cfg.grad_clip)
            return loss, n, grad, votes

        def call(inputs, targets, index, weight, segments, prev_grad, do_update):
            # dropout: the loop seeded (seed, micro); each rank draws its own masks
            mx.random.seed((self.cfg.seed * 1_000_003 + self.train.micro * 7919
                            + 104_729 * self.rank) % (2**63))
            share = mx.array(self.train.scale, dtype=mx.float32)
            stop = mx.array(float(self.user_cancel.requested), dtype=mx.float32)
            loss, n, grad, self._stop_votes = step(inputs, targets, index, weight, segments,
                                                   share, stop, prev_grad, do_update)
            return loss, n, grad

        return state, call

    def evaluate(self) -> float:
        """During the run: this rank's share of the validation batches, summed over ranks.
        Outside it (rank 0's baseline before step 1): the whole set, here alone."""
        if not self._collective:
            return super().evaluate()
        self.model.eval()
        total, count = mx.array(0.0), mx.array(0.0)
        for i, b in enumerate(self.valid.all_in_order()):
            if 0 <= self.cfg.val_batches <= i:
                break
            if i % self.size != self.rank:
                continue
            loss, n = self.loss(self.model, b.inputs, b.targets, b.index, b.weight, b.segments)
            total, count = total + loss * n, count + n
            mx.eval(total, count)
        both = mx.distributed.all_sum(mx.stack([total, count]), group=self.group)
        self.model.train()
        return (both[0] / mx.maximum(both[1], 1.0)).item()

    def _save(self) -> str:
        if self.rank == 0:
            return super()._save()
        self.last_checkpoint = str(self.adapter_dir / "checkpoints" / f"step-{self.step:07d}")
        return self.last_checkpoint

    # -- start: every rank from rank 0's state ---------------------------------------------
    def sync_from_rank0(self) -> None:
        """Rank 0's weights, optimizer state, step and history on every rank (a resumed run's
        checkpoint need only be on rank 0's machine)."""
        g = self.group
        weights = trainable_weights(self.model)
        opt = dict(tree_flatten(self.optimizer.state))
        header = broadcast_json({"step": self.step, "history": self.history.to_dict(),
                                 "weights": sorted(weights), "optimizer": sorted(opt),
                                 "last_checkpoint": self.last_checkpoint}, g)
        if header["weights"] != sorted(weights) or header["optimizer"] != sorted(opt):
            raise TailorError("the ranks hold different adapters or optimizer states; the "
                              "distributed run cannot start",
                              hint="every host needs the same Tailor version and settings")
        self.model.load_weights([(k, broadcast_array(weights[k], g)) for k in sorted(weights)],
                                strict=False)
        self.optimizer.state = tree_unflatten([(k, broadcast_array(opt[k], g))
                                               for k in sorted(opt)])
        self.step = int(header["step"])
        self.history = type(self.history).from_dict(header["history"])
        if self.rank != 0 and header["last_checkpoint"]:
            self.last_checkpoint = str(self.adapter_dir / "checkpoints"
                                       / Path(header["last_checkpoint"]).name)
        mx.eval(self.model.parameters(), self.optimizer.state)

    def run(self):
        try:
            self.sync_from_rank0()
            self._collective = True
            return super().run()
        except RuntimeError as e:
            if is_peer_lost(e):
                raise RankLost(str(e).strip(), self._rank0_checkpoint(), self.name) from None
            raise
        finally:
            self._collective = False
            if self._scratch is not None:
                self._scratch.cleanup()

    def _rank0_checkpoint(self) -> str:
        return self.last_checkpoint if self.rank == 0 else ""


def watch_terminate(cancel: CancelToken):
    """mlx.launch stops the other ranks with SIGTERM when one fails: a rank asks to stop (the
    ring's own error usually ends the step first, and rank 0 records the run as failed), and
    leaves for good if a blocked receive keeps it past TERMINATE_GRACE_S."""
    def on_term(signum, frame):
        cancel.cancel("another rank ended")
        timer = threading.Timer(TERMINATE_GRACE_S, lambda: os._exit(1))
        timer.daemon = True
        timer.start()

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (tests): nothing to install
        pass


# -- how run.py and the command use it ------------------------------------------------------
def trainer_for(cfg):
    """The trainer class for ``cfg`` in this process: the distributed one on several ranks."""
    from .preference import trainer_class

    if group() is None:
        return trainer_class(cfg)
    if cfg.objective != "sft":
        from .distributed_preference import DistributedPreferenceTrainer

        return DistributedPreferenceTrainer
    return DistributedTrainer


def run_record() -> dict:
    """The run record's (and Started info's) account of the ranks: how many, on which hosts."""
    rank, size = world()
    hosts = [socket_name()]
    if size > 1:
        hosts = _gather_hosts(group())
    return {"ranks": size, "hosts": hosts, "backend": os.environ.get("TAILOR_BACKEND", "ring")
            if size > 1 else "none"}


def socket_name() -> str:
    import socket

    return socket.gethostname()


def _gather_hosts(g) -> list[str]:
    """Every rank's host name, in rank order (each rank fills its own row)."""
    width = 128
    rows = np.zeros((g.size(), width), dtype=np.int32)
    name = socket_name().encode("utf-8")[:width]
    rows[g.rank(), :len(name)] = np.frombuffer(name, dtype=np.uint8)
    out = np.array(mx.distributed.all_sum(mx.array(rows), group=g)).astype(np.uint8)
    return [bytes(r).rstrip(b"\0").decode("utf-8", "replace") for r in out]


def shared_settings(settings: dict) -> dict:
    """Rank 0's run settings (model, data, training and data settings) on every rank."""
    g = group()
    return broadcast_json(settings, g) if g is not None else settings


def train_worker(model, data, name: str, cfg, data_config, *, job) -> None:
    """A rank other than 0: load the same base and data, train in step with rank 0, write
    nothing (rank 0 keeps the library entry)."""
    from ..events import null_reporter
    from .adapters import apply_adapters
    from .preference import check_objective
    from .run import _load

    cfg.validate()
    run = _load(model, data, cfg, data_config, null_reporter, job.cancel, job.name)
    check_objective(cfg, run.dataset["schema"], str(data))
    run_record()  # its all-gather pairs with rank 0's
    mx.random.seed(cfg.seed)  # the same adapter initialisation (rank 0's is sent anyway)
    apply_adapters(run.net, cfg)
    pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0
    trainer = trainer_for(cfg)(run.net, cfg, run.prepared.train, run.prepared.valid,
                               adapter_dir=Path(name), run_state={}, cancel=job.cancel,
                               job=job.name, pad_id=int(pad_id),
                               report=job.report)  # its steps: this host's rate in the log
    trainer.run()
