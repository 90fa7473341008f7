"""One rank of the data-parallel tests (tests/policies/test_distributed.py), started by
policies.distributed.launch_local with torchrun's environment. Writes its findings as JSON to OUT/rank<r>.json.

    python tests/policies/ddp_worker.py merge OUT      # gradient and normalizer merging vs one process
    python tests/policies/ddp_worker.py train OUT      # PPO for a few iterations, then the in-sync check
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from policies import distributed as ddp
from policies.models import ActorCritic, EmpiricalNormalization


def merge(ctx: ddp.DistContext) -> dict:
    """A batch split in two over the ranks gives the full batch's gradient and normalizer statistics."""
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 9, generator=gen) * 3.0 + 1.0  # the whole batch, the same on every rank
    target = torch.randn(64, generator=gen)
    half = obs.shape[0] // ctx.world_size
    mine = slice(ctx.rank * half, (ctx.rank + 1) * half)

    torch.manual_seed(1)
    full = ActorCritic(9, 4)
    split = ActorCritic(9, 4)
    split.load_state_dict(full.state_dict())
    (full.value(obs) - target).square().mean().backward()
    (split.value(obs[mine]) - target[mine]).square().mean().backward()
    ddp.average_gradients(split.parameters(), ctx)
    grad_err = max(float((a.grad - b.grad).abs().max()) for a, b in zip(full.parameters(), split.parameters())
                   if a.grad is not None)
    grad_scale = max(float(a.grad.abs().max()) for a in full.parameters() if a.grad is not None)
    # statistics riding with the gradients' all_reduce, and per-minibatch sums of an epoch in one collective
    summed = ddp.average_gradients(split.parameters(), ctx, extra=torch.tensor([float(ctx.rank + 1), 0.5]))
    adv = torch.randn(64, generator=gen)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(ctx.rank))
    sums = ddp.minibatch_sums(adv[mine], perm, 12, ctx)  # minibatches of 12, 12 and 8 on each rank
    parts = [torch.cat([adv[r * half:(r + 1) * half][torch.randperm(32, generator=torch.Generator().manual_seed(r))]
                        [j:j + 12] for r in range(ctx.world_size)]) for j in range(0, 32, 12)]
    expected = torch.tensor([[len(p), float(p.sum()), float(p.square().sum())] for p in parts])

    one, merged = EmpiricalNormalization(9), EmpiricalNormalization(9)
    for chunk in (obs[:32], obs[32:]):  # two updates, as two rollout steps
        one.update(chunk)
        part = chunk[ctx.rank * 16:(ctx.rank + 1) * 16]
        ddp.update_normalizer(merged, part, ctx)
    norm_err = max(float((one.mean - merged.mean).abs().max()), float((one.var - merged.var).abs().max()))

    # the in-sync check sees a difference of one ulp in one weight of one rank
    with torch.no_grad():
        if ctx.rank == 1:
            p = next(split.parameters())
            p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))
    try:
        ddp.check_in_sync(split, ctx)
        caught = None
    except ddp.RankFailure as e:
        caught = str(e)
    return {"grad_err": grad_err, "grad_scale": grad_scale, "norm_err": norm_err, "extra": summed.tolist(),
            "grad_err_after_extra": max(float((a.grad - b.grad).abs().max()) for a, b in
                                        zip(full.parameters(), split.parameters()) if a.grad is not None),
            "minibatch_sums_err": float((sums - expected).abs().max()), "minibatch_sums_shape": list(sums.shape),
            "count": int(merged.count), "count_one": int(one.count), "sync_error": caught}


def train_ranks(ctx: ddp.DistContext, out: Path) -> dict:
    from policies.ppo import PPOCfg, train
    from sim.tasks import make_env

    env = make_env("hover", num_envs=16, seed=ddp.rank_seed(0, ctx.rank), physics="eager")
    cfg = PPOCfg(num_iterations=3, num_steps=8, num_minibatches=2, update_epochs=2, save_interval=1)
    counts: dict[str, int] = {}  # collectives by what they carry (each waits for the slowest rank)
    collective = ddp._collective

    def counting(ctx_, what, fn):
        counts[what] = counts.get(what, 0) + 1
        return collective(ctx_, what, fn)

    ddp._collective = counting
    try:
        ckpt = train(env, "hover", cfg, out / "run", progress=False, dist_ctx=ctx)
    finally:
        ddp._collective = collective
    return {"checkpoint": str(ckpt), "in_sync_checks": cfg.num_iterations, "collectives": counts,
            "num_steps": cfg.num_steps, "minibatch_steps": cfg.update_epochs * cfg.num_minibatches}


def main() -> int:
    mode, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    ctx = ddp.init_from_env("cpu")
    try:
        result = merge(ctx) if mode == "merge" else train_ranks(ctx, out)
    finally:
        ddp.shutdown()
    (out / f"rank{ctx.rank}.json").write_text(json.dumps({"world_size": ctx.world_size, "backend": ctx.backend,
                                                           **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
