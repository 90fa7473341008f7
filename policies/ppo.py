"""PPO for thousands of parallel envs on CPU or CUDA, in one function you can read top to bottom.

Follows CleanRL's ppo_continuous_action.py (names from the math, b_/mb_ prefixes) with rsl_rl's
choices for massively parallel envs: running observation normalization, KL-adaptive learning rate,
time-out bootstrapping (Pardo et al. 2018, "Time Limits in Reinforcement Learning").
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import nn

from policies import distributed as ddp
from policies.checkpoint import CheckpointError, load_checkpoint, new_run_id, save_checkpoint, write_run_file
from policies.models import ActorCritic


@dataclasses.dataclass(frozen=True)
class PPOCfg:
    num_iterations: int = 150
    """policy updates"""
    num_steps: int = 16
    """rollout length per env per iteration [control steps]"""
    learning_rate: float = 1e-3
    """initial Adam step size"""
    adaptive_lr: bool = True
    """scale the learning rate to keep the KL near desired_kl (rsl_rl's schedule)"""
    desired_kl: float = 0.01
    """target KL divergence between successive policies of the adaptive schedule [nats]"""
    gamma: float = 0.99
    """discount per control step [1]"""
    gae_lambda: float = 0.95
    """GAE bias-variance trade-off [1]"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 4
    """passes over each rollout"""
    clip_coef: float = 0.2
    """PPO ratio clip (and value clip) [1]"""
    ent_coef: float = 0.0
    """entropy bonus weight [1]"""
    vf_coef: float = 1.0
    """value loss weight [1]"""
    max_grad_norm: float = 1.0
    """global gradient norm clip [1]"""
    actor_hidden: tuple[int, ...] = (64, 64)
    """hidden layer widths of the actor"""
    critic_hidden: tuple[int, ...] = (64, 64)
    """hidden layer widths of the critic"""
    init_log_std: float = -1.0
    """initial log standard deviation of the Gaussian policy [log of normalized action units]"""
    init_log_std_actions: tuple[float, ...] = ()
    """per action, in the env's action order, the initial log standard deviation instead of init_log_std
    (empty: init_log_std for every action) [log of normalized action units]"""
    seed: int = 0
    """torch seed of the run"""
    save_interval: int = 10
    """iterations between checkpoints"""
    critic_warmup_iterations: int = 0
    """first iterations train the value function only (fine-tuning a given actor: a fresh critic's
    advantages are noise, and following them would first unlearn what the actor knows)"""
    actor_groups: tuple[str, ...] = ("policy",)
    """observation groups of the env ([N, width] vectors) concatenated in this order into the actor and
    critic input and normalized together, e.g. ("policy", "privileged") for a privileged teacher"""
    critic_groups: tuple[str, ...] = ()
    """observation groups the critic alone reads, in this order, through a normalizer of its own (an
    asymmetric critic, e.g. ("policy", "privileged"): the value of the vehicle it knows, the actor and the
    exported policy unchanged); empty: the critic reads actor_groups, as the actor"""

    def __post_init__(self):
        # one line per broken value, naming the key: config_from_dict prefixes "ppo."
        at_least_one = ("num_iterations", "num_steps", "num_minibatches", "update_epochs", "save_interval")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.critic_warmup_iterations < 0:
            raise ValueError(f"critic_warmup_iterations must be >= 0, got {self.critic_warmup_iterations}")
        for name in ("learning_rate", "desired_kl", "gamma", "gae_lambda", "clip_coef", "ent_coef", "vf_coef",
                     "max_grad_norm", "init_log_std"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        positive = ("learning_rate", "desired_kl", "clip_coef", "max_grad_norm")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("ent_coef", "vf_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate > 1.0:
            raise ValueError(f"learning_rate {self.learning_rate} is out of range (0, 1]")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        groups = self.actor_groups
        if not groups or any(not isinstance(g, str) or not g for g in groups) or len(set(groups)) != len(groups):
            raise ValueError(f"actor_groups must be a non-empty list of distinct group names, got {list(groups)}")
        critic = self.critic_groups
        if any(not isinstance(g, str) or not g for g in critic) or len(set(critic)) != len(critic):
            raise ValueError(f"critic_groups must be a list of distinct group names (empty: actor_groups), got "
                             f"{list(critic)}")
        if any(not math.isfinite(v) for v in self.init_log_std_actions):
            raise ValueError(f"init_log_std_actions must be finite numbers, got {list(self.init_log_std_actions)}")
        for name in ("actor_hidden", "critic_hidden"):
            widths = getattr(self, name)
            if not widths or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
                raise ValueError(f"{name} must be a non-empty list of layer widths >= 1, got {list(widths)}")

    @property
    def value_groups(self) -> tuple[str, ...]:
        """the groups the critic reads: critic_groups, or actor_groups when none are given"""
        return self.critic_groups or self.actor_groups

    @property
    def rollout_groups(self) -> tuple[str, ...]:
        """every group the actor or the critic reads, actor_groups first: what a rollout keeps"""
        return self.actor_groups + tuple(g for g in self.value_groups if g not in self.actor_groups)


# Tasks whose PPO settings differ from PPOCfg()'s, by name (an explicit registry, as sim.tasks.TASKS):
# a task registers its own defaults with one entry here (e.g. its actor_groups).
# hover_robust: its integral action has a slow mode (a period of ~5 s when under-damped); at gamma 0.99 the
# discount horizon is 2 s at 50 Hz and PPO learned an under-damped integral loop that held 5 cm on 42 % of
# vehicles drawn from the class; at 0.995 (4 s) 91 % (issue 10 notes). Its checkpoints swing, so a run is
# selected by evaluation after training (policies.select). Its critic also reads the drawn vehicle
# ("privileged", sim.tasks.hover.RobustHoverEnv): class vehicles held, seeds 0 / 1 / 2, 223 / 200 / 171 ->
# 221 / 234 / 215 of 256 at 1 thread (README, issue 10; ~128 CPU-s). 150 iterations chose the same checkpoints
# at 1 thread, but a 2-thread run of seed 0 held nothing before iteration 125, so 200 stay. A checkpoint every 5
# iterations (40 candidates, selection ~9 s instead of ~4): the selection's nominal gate (policies.select) finds
# more checkpoints near the class's best that also hold the nominal vehicle (the demo's seed 0 at 2 threads: of
# 8 candidates the best, iteration 175, held 98 of the acceptance's 100; of 40, iteration 180 holds 99).
PPO_DEFAULTS: dict[str, PPOCfg] = {
    "hover_robust": PPOCfg(gamma=0.995, num_iterations=200, save_interval=5, critic_groups=("policy", "privileged")),
    "hover_robust_px4": PPOCfg(gamma=0.995, num_iterations=225, save_interval=25),
    "hover_robust_rotor": PPOCfg(gamma=0.995, num_iterations=225, save_interval=25, init_log_std=-1.5),
    # navigate: the privileged teacher (state + ray fan), distilled into the depth student (policies.distill)
    "navigate": PPOCfg(actor_groups=("policy", "privileged"), num_iterations=600, num_steps=32,
                       actor_hidden=(128, 128), critic_hidden=(128, 128), save_interval=25),
}


def ppo_defaults(task: str) -> PPOCfg:
    """The PPO config ``task`` trains with unless told otherwise."""
    return PPO_DEFAULTS.get(task, PPOCfg())


def group_widths(obs: dict[str, torch.Tensor], groups: tuple[str, ...], key: str = "actor_groups") -> dict[str, int]:
    """{group: width} of the vector groups ``groups`` (the PPO setting ``key``) of an env's observation
    dict, in that order."""
    missing = [g for g in groups if g not in obs]
    if missing:
        raise ValueError(f"ppo.{key} {list(groups)}: the env has no group(s) {missing} (it returns "
                         f"{sorted(obs)})")
    not_vectors = [f"{g} {list(obs[g].shape)}" for g in groups if obs[g].ndim != 2]
    if not_vectors:
        raise ValueError(f"ppo.{key} must name [num_envs, width] vector groups; {', '.join(not_vectors)} "
                         f"is not one (image groups go through an encoder: a depth student is distilled)")
    return {g: obs[g].shape[1] for g in groups}


def minibatch_loss(model: ActorCritic, mb_obs, mb_actions, mb_logprobs, mb_advantages, mb_returns, mb_values,
                   adv_mean, adv_std, clip_coef: float, ent_coef: float, vf_coef: float, warmup: bool):
    """PPO's clipped loss on one minibatch -> (loss, pg_loss, v_loss, entropy, k3 KL terms, clipped flags);
    the last two carry no gradient (the adaptive learning rate and the clip fraction read them)."""
    dist = model.distribution(mb_obs)
    newlogprob = dist.log_prob(mb_actions).sum(-1)
    entropy = dist.entropy().sum(-1).mean()
    newvalue = model.value(mb_obs)
    logratio = newlogprob - mb_logprobs
    ratio = logratio.exp()
    kl_terms = ((ratio - 1) - logratio).detach()  # Schulman's k3 estimator
    clipped = ((ratio - 1.0).abs() > clip_coef).float().detach()
    mb_advantages = (mb_advantages - adv_mean) / (adv_std + 1e-8)
    pg_loss1 = -mb_advantages * ratio
    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    v_clipped = mb_values + (newvalue - mb_values).clamp(-clip_coef, clip_coef)
    v_loss = 0.5 * torch.max((newvalue - mb_returns).square(), (v_clipped - mb_returns).square()).mean()
    if warmup:  # value only, unclipped: a fresh critic must travel far from its first estimates
        loss = vf_coef * 0.5 * (newvalue - mb_returns).square().mean()
    else:
        loss = pg_loss - ent_coef * entropy + vf_coef * v_loss
    return loss, pg_loss, v_loss, entropy, kl_terms, clipped


def _wait_for(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(env, task: str, cfg: PPOCfg, run_dir: str | Path, resume: str | Path | None = None,
          progress: bool = True, writer=None, init: ActorCritic | None = None, run_id: str | None = None,
          dist_ctx: ddp.DistContext | None = None, compile_update: bool = False, fused_adam: bool = False) -> Path:
    """Train on ``env``; checkpoints go to ``run_dir``; returns the path of the last checkpoint.

    run_dir/run.json names the run (``run_id``, default a fresh one; a resumed run keeps the id of its
    checkpoint) and every checkpoint carries that id, so the folder's latest checkpoint is always this run's.

    init: start from this model's actor and (frozen) observation normalizer, e.g. a deployed policy
    rebuilt from its ONNX file; the critic starts fresh (see ``critic_warmup_iterations``).

    Every checkpoint records the wall-clock training time so far (``train_time_s``), excluding
    checkpoint I/O, so time-to-skill can be measured afterwards from the checkpoints alone.

    dist_ctx: this process's rank in a data-parallel run (policies.distributed): ``env`` is this rank's
    envs; weights start from rank 0's, gradients and normalizer statistics are merged every step, and
    rank 0 alone writes run.json, checkpoints and ``writer``'s logs. ``global_step`` counts all ranks.

    compile_update: torch.compile the minibatch loss with its backward (run settings, not the algorithm:
    the same update to rounding; kernels cached on disk by sim.kernel_cache). fused_adam: Adam's fused
    kernel (the same update to rounding).
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    device = env.device
    num_envs, act_dim = env.num_envs, env.cfg.action_dim
    if num_envs * cfg.num_steps < cfg.num_minibatches:
        raise ValueError(f"num_minibatches {cfg.num_minibatches} > the {num_envs * cfg.num_steps} samples of a "
                         f"rollout ({num_envs} envs x {cfg.num_steps} steps); use more envs or fewer minibatches")
    # the env draws from its own generator: resetting it here changes no other random stream
    next_obs = env.reset()
    widths = group_widths(next_obs, cfg.actor_groups)
    obs_dim = sum(widths.values())  # the MLP input; env.obs_dim with the default ("policy",)
    critic_widths = group_widths(next_obs, cfg.value_groups, "critic_groups")
    resumed = None
    if resume is not None:
        resumed = load_checkpoint(resume, task=task, obs_dim=env.obs_dim, action_dim=act_dim,
                                  action_space=getattr(env.cfg, "action_space", None), obs_groups=widths)
        run_id = resumed.get("run_id") or run_id
    run_id = run_id or new_run_id()
    main = dist_ctx is None or dist_ctx.is_main
    world = 1 if dist_ctx is None else dist_ctx.world_size
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_file(run_dir, run_id, task, resumed_from=resume)
    else:
        writer, progress = None, False
    torch.manual_seed(cfg.seed if dist_ctx is None else ddp.rank_seed(cfg.seed, dist_ctx.rank))

    model = ActorCritic(obs_dim, act_dim, cfg.actor_hidden, cfg.critic_hidden, cfg.init_log_std,
                        action_bias=env.hover_action.clone(), groups=cfg.actor_groups,
                        critic_groups=cfg.value_groups, critic_obs_dim=sum(critic_widths.values())).to(device)
    if cfg.init_log_std_actions:
        if len(cfg.init_log_std_actions) != act_dim:
            raise ValueError(f"ppo.init_log_std_actions has {len(cfg.init_log_std_actions)} values, the env "
                             f"{act_dim} actions")
        with torch.no_grad():
            model.log_std.copy_(torch.tensor(cfg.init_log_std_actions, dtype=model.log_std.dtype))
    if init is not None:
        if init.actor[0].in_features != obs_dim or init.log_std.shape[0] != act_dim:
            raise ValueError(f"init model is {init.actor[0].in_features} obs -> {init.log_std.shape[0]} actions, "
                             f"the env {obs_dim} -> {act_dim}")
        if tuple(getattr(init, "groups", ("policy",))) != cfg.actor_groups:
            raise ValueError(f"init model reads groups {list(init.groups)}, ppo.actor_groups is {list(cfg.actor_groups)}")
        model.actor = copy.deepcopy(init.actor).to(device)
        model.obs_normalizer = copy.deepcopy(init.obs_normalizer).to(device)
        model.obs_normalizer.until = 0  # frozen: the actor's weights were learned on these statistics
        model.action_bias = init.action_bias.detach().clone().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, **({"fused": True} if fused_adam else {}))
    loss_fn = minibatch_loss
    if compile_update:
        from sim.kernel_cache import use_kernel_cache

        use_kernel_cache()
        loss_fn = torch.compile(minibatch_loss, dynamic=False)
    start_iter, global_step, train_time_s, lr = 0, 0, 0.0, cfg.learning_rate
    train_cpu_s = 0.0  # this process's CPU seconds in training iterations (a shared machine's fair figure)
    if resumed is not None:
        ckpt = resumed
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError) as e:  # another network shape (actor_hidden / critic_hidden)
            raise CheckpointError(f"{resume}: its network (ppo actor_hidden {ckpt['ppo_cfg'].get('actor_hidden')}, "
                                  f"critic_hidden {ckpt['ppo_cfg'].get('critic_hidden')}) does not match this "
                                  f"run's ({list(cfg.actor_hidden)}, {list(cfg.critic_hidden)})") from e
        start_iter, global_step = ckpt["iteration"], ckpt["global_step"]
        train_time_s, lr = ckpt["train_time_s"], ckpt["learning_rate"]
        train_cpu_s = float(ckpt.get("logs", {}).get("charts/train_cpu_s", 0.0))

    ddp.broadcast_module(model, dist_ctx)  # every rank starts from rank 0's weights and statistics

    # one buffer per group the model reads (actor or critic): {group: [T, N, width]}
    all_widths = {**widths, **critic_widths}
    obs_buf = {g: torch.zeros(cfg.num_steps, num_envs, all_widths[g], device=device) for g in cfg.rollout_groups}
    actions = torch.zeros(cfg.num_steps, num_envs, act_dim, device=device)  # [T, N, act]
    logprobs = torch.zeros(cfg.num_steps, num_envs, device=device)  # [T, N]
    rewards = torch.zeros(cfg.num_steps, num_envs, device=device)
    dones = torch.zeros(cfg.num_steps, num_envs, device=device)
    values = torch.zeros(cfg.num_steps, num_envs, device=device)
    batch_size = cfg.num_steps * num_envs
    minibatch_size = batch_size // cfg.num_minibatches

    next_obs = {g: next_obs[g] for g in cfg.rollout_groups}
    # episode statistics summed on the device, weighted by the episodes they are over: nothing is read
    # back to the host inside the rollout (one read per iteration, at logging)
    episode_sums: dict[str, torch.Tensor] = {}
    episode_count = torch.zeros((), device=device)
    bar = tqdm(range(start_iter, cfg.num_iterations), desc=f"train {task}", disable=not progress,
               initial=start_iter, total=cfg.num_iterations, unit="it")
    last_ckpt = Path(resume) if resume is not None else None  # a finished run resumed is already done
    for iteration in bar:
        t0, cpu0 = time.perf_counter(), time.process_time()
        # ---- rollout
        rollout_err = torch.zeros((), device=device)
        with torch.no_grad():
            for step in range(cfg.num_steps):
                for norm, x in model.normalizers(next_obs):
                    ddp.update_normalizer(norm, x, dist_ctx)
                for g in cfg.rollout_groups:
                    obs_buf[g][step] = next_obs[g]
                dist = model.distribution(next_obs)
                action = dist.sample()
                values[step] = model.value(next_obs)
                actions[step] = action
                logprobs[step] = dist.log_prob(action).sum(-1)
                next_obs, reward, terminated, truncated, info = env.step(action)
                next_obs = {g: next_obs[g] for g in cfg.rollout_groups}
                # bootstrap time-outs with the value estimate at the step's start (rsl_rl's approximation)
                rewards[step] = reward + cfg.gamma * values[step] * truncated.float()
                dones[step] = (terminated | truncated).float()
                if "episode" in info:
                    n_ep = info.get("episode_count", torch.ones((), device=device)).float()
                    for k, v in info["episode"].items():
                        episode_sums[k] = episode_sums.get(k, 0.0) + v * n_ep
                    episode_count += n_ep
                rollout_err += info["pos_err_m"].mean() / cfg.num_steps

            # ---- GAE
            next_value = model.value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(num_envs, device=device)
            for t in reversed(range(cfg.num_steps)):
                nextvalues = next_value if t == cfg.num_steps - 1 else values[t + 1]
                nextnonterminal = 1.0 - dones[t]
                delta = rewards[t] + cfg.gamma * nextvalues * nextnonterminal - values[t]
                lastgaelam = delta + cfg.gamma * cfg.gae_lambda * nextnonterminal * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        b_obs = {g: buf.reshape(batch_size, buf.shape[-1]) for g, buf in obs_buf.items()}
        b_actions = actions.reshape(batch_size, act_dim)
        b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values.reshape(-1)

        _wait_for(device)  # one sync per iteration, so that the rollout / update split is real time on CUDA
        rollout_s = time.perf_counter() - t0

        # ---- PPO update
        # every epoch's permutation first (the same random stream as drawing each at its epoch), so that a
        # data-parallel run sums the advantage statistics of all minibatches of the update in one collective
        perms = [torch.randperm(batch_size, device=device) for _ in range(cfg.update_epochs)]
        if dist_ctx is not None:  # [E, M, 3]: count, sum, sum of squares of minibatch j of every rank
            adv_sums = ddp.all_sum(torch.stack([ddp.minibatch_sums(b_advantages, perm, minibatch_size, None)
                                                for perm in perms]), dist_ctx)
        for epoch, perm in enumerate(perms):
            for j in range(cfg.num_minibatches):  # the remainder of batch_size / num_minibatches sits out
                mb = perm[j * minibatch_size:(j + 1) * minibatch_size]
                mb_obs = {g: b[mb] for g, b in b_obs.items()}
                mb_advantages = b_advantages[mb]
                with torch.no_grad():
                    if dist_ctx is None:
                        adv_mean, adv_std = mb_advantages.mean(), mb_advantages.std()
                    else:  # the statistics of the union of all ranks' minibatches: every rank takes one step
                        n_mb, adv_sum, adv_sq = adv_sums[epoch, j].unbind(0)
                        adv_mean = adv_sum / n_mb
                        adv_std = ((adv_sq - n_mb * adv_mean.square()) / (n_mb - 1)).clamp_min(0.0).sqrt()
                warmup = iteration < cfg.critic_warmup_iterations
                loss, pg_loss, v_loss, entropy, kl_terms, clipped = loss_fn(
                    model, mb_obs, b_actions[mb], b_logprobs[mb], mb_advantages, b_returns[mb], b_values[mb], adv_mean,
                    adv_std, cfg.clip_coef, cfg.ent_coef, cfg.vf_coef, warmup)

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if dist_ctx is None:
                    approx_kl, clipfrac = kl_terms.mean(), clipped.mean()
                else:  # the KL and clip sums ride in the gradients' all_reduce (they act only at the step)
                    kl_sum, clip_sum = ddp.average_gradients(model.parameters(), dist_ctx,
                                                             extra=torch.stack([kl_terms.sum(), clipped.sum()]))
                    approx_kl, clipfrac = kl_sum / n_mb, clip_sum / n_mb
                if cfg.adaptive_lr and not warmup:
                    if approx_kl > 2.0 * cfg.desired_kl:
                        lr = max(1e-5, lr / 1.5)
                    elif approx_kl < 0.5 * cfg.desired_kl:
                        lr = min(1e-2, lr * 1.5)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()

        global_step += batch_size * world
        _wait_for(device)
        iteration_s = time.perf_counter() - t0
        train_time_s += iteration_s
        train_cpu_s += time.process_time() - cpu0

        # ---- logging
        n_episodes = float(episode_count)
        logs = {k: float(v) / n_episodes for k, v in episode_sums.items()} if n_episodes > 0 else {}
        episode_sums.clear()
        episode_count.zero_()
        logs.update({"rollout/pos_err_m": rollout_err.item(), "losses/policy": pg_loss.item(), "losses/value": v_loss.item(),
                     "losses/entropy": entropy.item(), "losses/approx_kl": approx_kl.item(),
                     "losses/clipfrac": clipfrac.item(), "charts/learning_rate": lr,
                     "charts/action_std": model.log_std.exp().mean().item(),
                     "charts/env_steps_per_s": batch_size * world / max(1e-9, iteration_s),
                     "charts/rollout_s": rollout_s, "charts/update_s": iteration_s - rollout_s,
                     "charts/train_cpu_s": train_cpu_s})
        if writer is not None:
            for k, v in logs.items():
                writer.add_scalar(k, v, global_step)
        bar.set_postfix({"err_m": f"{logs['rollout/pos_err_m']:.3f}",
                         "crash": f"{logs.get('episode/crash_rate', float('nan')):.2f}",
                         "lr": f"{lr:.1e}"})

        if (iteration + 1) % cfg.save_interval == 0 or iteration + 1 == cfg.num_iterations:
            ddp.check_in_sync(model, dist_ctx)  # what rank 0 saves is every rank's model
            last_ckpt = run_dir / f"model_{iteration + 1:05d}.pt"
            if main:
                save_checkpoint(last_ckpt, model=model, optimizer=optimizer, task=task, env=env, ppo_cfg=cfg,
                                iteration=iteration + 1, global_step=global_step, train_time_s=train_time_s,
                                learning_rate=lr, logs=logs, run_id=run_id, world_size=world,
                                obs_groups=widths, critic_groups=critic_widths if model.asymmetric else None)
    bar.close()
    ddp.barrier(dist_ctx)  # the last checkpoint is on disk when any rank returns its path
    return last_ckpt
