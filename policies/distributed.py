"""Data-parallel PPO on torch.distributed (issue 13): one process per rank, each with its own envs.

What a rank does differently from a single process (policies.ppo.train reads a :class:`DistContext`):
- rank 0's weights and buffers are broadcast at start (:func:`broadcast_module`), so every rank starts
  from the same model whatever it loaded or drew;
- every rank updates the observation normalizer with the statistics of all ranks' observations
  (:func:`update_normalizer`: count, mean and M2 gathered and merged by Chan's rule in rank order);
- every minibatch step averages the gradients over ranks (:func:`average_gradients`, one all_reduce of
  the flattened gradients), and the minibatch statistics PPO needs globally (advantage mean and std for
  the normalization, approximate KL for the adaptive learning rate) are summed over ranks
  (:func:`all_sum`): the update is the update of one process on the union of the ranks' minibatches,
  and the ranks stay bit-identical;
- rank 0 alone writes checkpoints, run.json, config files, TensorBoard logs and the progress bar.

The backend is chosen at run time: NCCL when the env's device is CUDA, gloo otherwise (so the path is
tested on CPUs). Collectives time out after ``TETHER_DIST_TIMEOUT_S`` seconds (default 120): a rank
that dies ends the others within that bound, usually at once (its sockets close).

Launch: ``tether train TASK --nproc N`` (:func:`launch_local`: N local processes, the launcher ends the
rest as soon as one fails) or ``torchrun --nproc-per-node N -m tether_app.cli train TASK ...`` (also
multi-node, with torchrun's c10d rendezvous; README).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int
    """global rank of this process [0, world_size)"""
    world_size: int
    """number of processes"""
    local_rank: int
    """rank on this node (picks the CUDA device)"""
    backend: str
    """'nccl' or 'gloo'"""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class RankFailure(RuntimeError):
    """A collective failed: another rank died or timed out; the message says which and how to resume."""


def in_distributed_launch() -> bool:
    """True inside torchrun or `tether train --nproc` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: torch.device | str) -> str:
    """NCCL for CUDA tensors, gloo for CPU tensors (NCCL cannot carry CPU tensors)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: str, local_rank: int) -> str:
    """'cuda' -> 'cuda:<local_rank>' (one GPU per rank); an explicit index or a CPU is kept."""
    d = torch.device(device)
    return f"cuda:{local_rank}" if d.type == "cuda" and d.index is None else str(d)


def rank_seed(seed: int, rank: int) -> int:
    """The env and sampling seed of ``rank``: rank 0 keeps the run's seed (a one-process run is unchanged)."""
    return seed + 1_000_003 * rank


def init_from_env(device: str) -> DistContext:
    """Join the process group torchrun (or :func:`launch_local`) described in the environment."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(torch.device(rank_device(device, local_rank)))
    timeout = datetime.timedelta(seconds=float(os.environ.get("TETHER_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective(ctx: DistContext, what: str, fn):
    try:
        return fn()
    except (RuntimeError, dist.DistError) as e:  # gloo / NCCL: a peer closed its socket, or the timeout hit
        reason = " ".join(str(e).split())[:160]
        raise RankFailure(f"rank {ctx.rank}/{ctx.world_size}: {what} failed ({reason}): another rank stopped or "
                          "hung; the job ends; resume it from its last checkpoint with --resume <run folder>") from e


def barrier(ctx: DistContext | None) -> None:
    if ctx is not None:
        _collective(ctx, "barrier", lambda: dist.barrier())


def broadcast_module(module: torch.nn.Module, ctx: DistContext | None, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` := rank ``src``'s."""
    if ctx is None:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            _collective(ctx, "broadcast of the initial weights", lambda t=t: dist.broadcast(t.data, src))


def check_in_sync(module: torch.nn.Module, ctx: DistContext | None) -> None:
    """Raise :class:`RankFailure` unless every rank's parameters and buffers equal rank 0's bit for bit
    (the update is the same on every rank; a difference is a bug or a nondeterministic kernel)."""
    if ctx is None:
        return
    flat = torch.cat([t.detach().reshape(-1).double() for t in list(module.parameters()) + list(module.buffers())])
    gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    _collective(ctx, "all_gather of the weights", lambda: dist.all_gather(gathered, flat))
    for rank, other in enumerate(gathered[1:], start=1):
        if not torch.equal(other, gathered[0]):
            diff = float((other - gathered[0]).abs().max())
            raise RankFailure(f"ranks diverged: rank {rank}'s weights differ from rank 0's (max |diff| {diff:.3g})")


def all_sum(x: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    """Sum of ``x`` over ranks (in place, returned); ``x`` itself without a run."""
    if ctx is not None:
        _collective(ctx, "all_reduce", lambda: dist.all_reduce(x, op=dist.ReduceOp.SUM))
    return x


def average_gradients(params, ctx: DistContext | None, extra: torch.Tensor | None = None) -> torch.Tensor | None:
    """Each gradient := its mean over ranks: one all_reduce of all of them, flattened.

    extra: a 1-d tensor summed over ranks in the same all_reduce, returned summed (``extra`` itself without
    a run). Statistics that act only at ``optimizer.step`` (the minibatch's KL sum for the adaptive learning
    rate, the clip fraction) can ride with the gradients instead of taking a collective of their own: on a
    shared machine each collective waits for the slowest rank to be scheduled (2.7-4.3 ms per collective
    between two gloo ranks at load 11 here, against ~0.1 ms of work), so their count bounds the scaling."""
    if ctx is None:
        return extra
    grads = [p.grad for p in params if p.grad is not None]
    parts = [g.reshape(-1) for g in grads] + ([] if extra is None else [extra.reshape(-1).to(grads[0].dtype)])
    flat = all_sum(torch.cat(parts), ctx)
    n_grad = flat.numel() - (0 if extra is None else extra.numel())
    flat[:n_grad].div_(ctx.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return None if extra is None else flat[n_grad:].to(extra.dtype).view_as(extra)


def minibatch_sums(x: torch.Tensor, perm: torch.Tensor, minibatch_size: int, ctx: DistContext | None) -> torch.Tensor:
    """[M, 3]: (count, sum, sum of squares) of ``x`` over each of the M minibatches ``perm`` splits it into,
    summed over ranks (minibatch j of the run = every rank's j-th minibatch), in one collective for the whole
    epoch: what the per-minibatch advantage normalization needs, without a collective per minibatch."""
    num_mb = -(-perm.numel() // minibatch_size)  # the last one may be short, as range(0, B, mb) makes it
    which = torch.arange(perm.numel(), device=x.device) // minibatch_size  # [B] minibatch of each position
    v = x[perm]
    sums = torch.zeros(num_mb, 3, device=x.device, dtype=x.dtype)
    sums[:, 0].index_add_(0, which, torch.ones_like(v))
    sums[:, 1].index_add_(0, which, v)
    sums[:, 2].index_add_(0, which, v.square())
    return all_sum(sums, ctx)


@torch.no_grad()
def update_normalizer(norm, x: torch.Tensor, ctx: DistContext | None) -> None:
    """``norm.update(x)`` with the observations of every rank: each rank's count, mean and M2 are
    gathered and merged (Chan et al.) in rank order, so every rank applies the same batch statistics."""
    if ctx is None:
        norm.update(x)
        return
    if norm.until is not None and norm.count >= norm.until:
        return
    n = torch.tensor([float(x.shape[0])], device=x.device)
    mean = x.mean(0)
    m2 = ((x - mean) ** 2).sum(0)
    local = torch.cat([n, mean, m2])  # [1 + 2 d]
    gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
    _collective(ctx, "all_gather of observation statistics", lambda: dist.all_gather(gathered, local))
    d = mean.shape[0]
    b_n, b_mean, b_m2 = gathered[0][0], gathered[0][1:1 + d], gathered[0][1 + d:]
    for g in gathered[1:]:
        g_n, g_mean, g_m2 = g[0], g[1:1 + d], g[1 + d:]
        total = b_n + g_n
        delta = g_mean - b_mean
        b_mean = b_mean + delta * g_n / total
        b_m2 = b_m2 + g_m2 + delta.square() * b_n * g_n / total
        b_n = total
    # the normalizer's own update (policies.models.EmpiricalNormalization) with the merged batch
    batch_var = b_m2 / b_n
    count = norm.count.to(b_n.dtype)
    total = count + b_n
    delta = b_mean - norm.mean
    norm.mean += delta * b_n / total
    norm.var = (norm.var * count + batch_var * b_n + delta.square() * count * b_n / total) / total
    norm.count = norm.count + b_n.to(norm.count.dtype).squeeze()


# ------------------------------------------------------------------ the local launcher


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def launch_local(python_argv: list[str], nproc: int, grace_s: float = 10.0) -> tuple[int, str | None]:
    """Run ``python <python_argv>`` (e.g. ``-m tether_app.cli train hover``) as ``nproc`` local ranks (the environment torchrun sets: RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). When a rank fails, the others get SIGTERM, then
    SIGKILL after ``grace_s``. Returns (status, None) when all succeed, else (the first failure's
    status, a one-line description of it)."""
    port = _free_port()
    procs = []
    for rank in range(nproc):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, *python_argv], env=env))
    failure: tuple[int, str] | None = None
    try:
        while True:
            states = [p.poll() for p in procs]
            bad = [(r, s) for r, s in enumerate(states) if s not in (None, 0)]
            if bad and failure is None:
                # ranks found stopped in the same poll: one killed from outside goes first, since a peer
                # that lost it aborts within milliseconds (gloo: SIGABRT) and is its consequence
                rank, status = min(bad, key=lambda rs: (not (rs[1] < 0 and rs[1] != -signal.SIGABRT), rs[0]))
                failure = (status if status > 0 else 1, f"rank {rank} of {nproc} stopped ({_describe(status)})")
                _stop(procs, grace_s)
            if all(s is not None for s in states) or failure is not None:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(procs, grace_s)
        raise
    for p in procs:
        p.wait()
    return (0, None) if failure is None else failure


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
