"""Reward labels for logged steps: RLIF's intervention-as-reward and the hover task's own reward.

RLIF (Luo et al., "RLIF: Interactive Imitation Learning as Reinforcement Learning", ICLR 2024): the
operator's decision to take over is the only reward signal. The agent's step right before a takeover
gets -1, every other step 0; no task reward is needed, so any task a person can judge can be learnt.
"""

from __future__ import annotations

import numpy as np


def takeover_onsets(intervention: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """[N] bool: step k is the first human-controlled step of a takeover (autonomous at k-1, same episode)."""
    iv = np.asarray(intervention, dtype=bool)
    prev = np.concatenate([[False], iv[:-1]])
    same = np.concatenate([[False], episode[1:] == episode[:-1]])
    return iv & ~prev & same


def rlif_rewards(intervention: np.ndarray, episode: np.ndarray, penalty: float = -1.0) -> np.ndarray:
    """[N] reward of the transition k -> k+1: ``penalty`` where the operator took over at k+1, else 0."""
    onset = takeover_onsets(intervention, episode)
    r = np.zeros(len(onset))
    r[:-1] = np.where(onset[1:], penalty, 0.0)
    return r


def hover_rewards(pos_err_next_m: np.ndarray, up_z_next: np.ndarray, speed_next_m_s: np.ndarray,
                  action_change: np.ndarray, dt_s: float, fine_scale_m: float = 0.05) -> np.ndarray:
    """[N] the hover task's reward terms (sim/tasks/quadrotor_env.py defaults, per control period) on the
    state after each step: alive, position, fine position, upright, speed, action rate."""
    r = (3.0 - 1.0 * pos_err_next_m + 2.0 * np.exp(-pos_err_next_m / fine_scale_m)
         - 0.5 * (1.0 - up_z_next) - 0.1 * speed_next_m_s - 0.05 * np.sum(action_change ** 2, axis=-1))
    return r * dt_s
