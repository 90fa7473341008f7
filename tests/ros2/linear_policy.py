"""Small ONNX policies for the ROS 2 tests and the latency bench (onnx.helper only, no torch).

``write_linear_hover_policy`` writes a linearised PD hover controller for a quadrotor preset as one
MatMul + Add (rotor-level actions), with a correct contract: observation pos_err_w, quat_wxyz, lin_vel_w,
ang_vel_b, prev_actions (weights 0, present to exercise the history). Small-angle model: roll = 2 q_x,
pitch = 2 q_y, yaw = 2 q_z; a_x = g pitch, a_y = -g roll; rotor thrusts from the preset's allocation
matrix, linearised in rotor speed around hover.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sim.quadrotor.presets import GRAVITY, PRESETS
from tether.contract import ActionSpec, PolicyContract, Rotor, make_slices, save_contract, sha256_file

OBS = [("pos_err_w", 3), ("quat_wxyz", 4), ("lin_vel_w", 3), ("ang_vel_b", 3), ("prev_actions", 4)]


def hover_gain_matrix(preset_name: str = "crazyflie2x", pos_w_n: float = 1.5, att_w_n: float = 8.0,
                      yaw_w_n: float = 3.0) -> tuple[np.ndarray, np.ndarray, ActionSpec]:
    """W [obs_dim, 4], b [4] and the action spec of the linear hover controller (natural frequencies in
    rad/s for the position, roll/pitch and yaw loops)."""
    p = PRESETS[preset_name]
    m, (ix, iy, iz) = p.mass_kg, p.inertia_kg_m2
    pos = np.asarray(p.rotor_pos_b)
    spin = np.asarray(p.rotor_spin, dtype=np.float64)
    alloc = np.stack([np.ones(4), pos[:, 1], -pos[:, 0], -spin * p.km_nm_per_rpm2 / p.kf_n_per_rpm2])
    mix = np.linalg.pinv(alloc)  # [4 rotors, 4 wrench]
    f_h = m * GRAVITY / 4
    rpm_h = math.sqrt(f_h / p.kf_n_per_rpm2)
    a_h = 2 * rpm_h / p.max_rpm - 1
    da_df = (2 / p.max_rpm) / (2 * math.sqrt(p.kf_n_per_rpm2 * f_h))
    kp, kd = pos_w_n ** 2, 2 * 0.9 * pos_w_n
    kpa, kda = att_w_n ** 2, 2 * 0.8 * att_w_n
    kpy, kdy = yaw_w_n ** 2, 2 * 0.8 * yaw_w_n
    # wrench (T, tx, ty, tz) = K @ obs_core + wrench_h, obs_core = [e(3), q(4), v(3), w(3)]
    k = np.zeros((4, 13))
    k[0, 2], k[0, 9] = m * kp, -m * kd                       # thrust from e_z, v_z
    # roll_des = -a_y,des / g = -(kp e_y - kd v_y) / g ; roll = 2 q_x
    k[1, 1], k[1, 8] = ix * kpa * (-kp / GRAVITY), ix * kpa * (kd / GRAVITY)
    k[1, 4], k[1, 10] = -ix * kpa * 2, -ix * kda
    # pitch_des = a_x,des / g ; pitch = 2 q_y
    k[2, 0], k[2, 7] = iy * kpa * (kp / GRAVITY), iy * kpa * (-kd / GRAVITY)
    k[2, 5], k[2, 11] = -iy * kpa * 2, -iy * kda
    k[3, 6], k[3, 12] = -iz * kpy * 2, -iz * kdy
    w_core = da_df * (mix @ k)  # [4, 13]
    w = np.zeros((17, 4), dtype=np.float32)
    w[:13] = w_core.T
    b = np.full(4, a_h, dtype=np.float32)
    spec = ActionSpec(type="rotor", dim=4, rotors=tuple(Rotor(tuple(map(float, r)), int(s))
                                                         for r, s in zip(p.rotor_pos_b, p.rotor_spin)),
                      max_rpm=p.max_rpm, kf_n_per_rpm2=p.kf_n_per_rpm2, km_nm_per_rpm2=p.km_nm_per_rpm2,
                      max_thrust_n=p.max_thrust_n, hover_action=(float(a_h),) * 4)
    return w, b, spec


def write_onnx(path: Path, w: np.ndarray, b: np.ndarray, input_name: str = "obs",
               output_name: str = "actions", nan: bool = False) -> None:
    nodes = [helper.make_node("MatMul", [input_name, "W"], ["y"]),
             helper.make_node("Add", ["y", "b"], [output_name if not nan else "z"])]
    inits = [numpy_helper.from_array(w.astype(np.float32), "W"), numpy_helper.from_array(b.astype(np.float32), "b")]
    if nan:  # a policy whose output is NaN: z * inf - z * inf
        inits.append(numpy_helper.from_array(np.array([np.inf], dtype=np.float32), "inf"))
        nodes += [helper.make_node("Mul", ["z", "inf"], ["zi"]), helper.make_node("Sub", ["zi", "zi"], [output_name])]
    graph = helper.make_graph(
        nodes, "linear_policy",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", w.shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_linear_hover_policy(out_dir: str | Path, preset_name: str = "crazyflie2x", control_rate_hz: float = 100.0,
                              bias_offset: float = 0.0, nan: bool = False, task: str = "hover_linear") -> Path:
    """policy.onnx + policy.json of the linear hover controller; ``bias_offset`` shifts every output
    (a distinguishable second policy for hot-swap tests); ``nan`` makes a policy that outputs NaN."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, b, spec = hover_gain_matrix(preset_name)
    write_onnx(out / "policy.onnx", w, b + bias_offset, nan=nan)
    contract = PolicyContract(
        task=task, control_rate_hz=control_rate_hz, action_latency_s=0.0, observation=make_slices(OBS),
        action=spec,
        provenance={"onnx_sha256": sha256_file(out / "policy.onnx"), "opset": 17,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "config_hash": "linear-pd", "source": "tests/ros2/linear_policy.py"})
    save_contract(contract, out / "policy.json")
    return out
