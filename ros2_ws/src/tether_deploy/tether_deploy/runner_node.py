"""Policy runner: a lifecycle node that flies an exported policy (policy.onnx + policy.json).

configure  loads and verifies the policy (sha256, I/O names and shapes, contract version, quantities the
           runner can provide) and refuses a mismatch, saying what is wrong (log and /diagnostics);
activate   starts the control timer at the contract's rate. Ticks follow the state stream (lowest
           latency) with the timer as the fallback, see runner_core.TickScheduler;
every tick the runner publishes the policy action, the human action (when there is teleop input), the
executed action and the intervention flag; the mode (policy / human / safe:... / estop) on change.

A new policy is offered on ``runner/load_policy`` (std_msgs/String: a directory); it is loaded and
verified in a background thread and swapped in between two ticks. If it fails, the running one keeps
running and ``runner/active_policy`` plus /diagnostics say why.

State messages are checked before use (frame ids, header stamp, values; runner_core.set_state): a
fault is said once in the log, counted by cause in /diagnostics, and needs good_states_to_recover good
messages in a row before the policy flies again. Commands are sensor_msgs/JointState, stamped at the
tick, in the body frame, named by the contract's outputs.

A policy with image inputs (contract 2.1 ``images``) gets one sensor_msgs/Image and one CameraInfo
subscription per input, on the contract's topics; a tick flies the policy only with a fresh, valid image
(runner_core / image_core: encoding, size, stamp age, intrinsics), else the safe behaviour, one log line
per cause and the ticks counted by cause in /diagnostics. A flat-vector policy subscribes to no image.

Topics, types and QoS: interface.RUNNER (docs/ROS_INTERFACE.md is generated from it).
"""

from __future__ import annotations

import functools
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, Vector3Stamped
from nav_msgs.msg import Odometry
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, String

from tether.contract import ContractError, compat_note
from tether_deploy import interface as itf
from tether_deploy import qos
from tether_deploy.arbitration import EstopLatch, HumanInput
from tether_deploy.conversions import (camera_info_intrinsics, command_names, fill_command, fill_point_stamped,
                                       odometry_to_quantities, stamp_to_s)
from tether_deploy.realtime import make_background, make_realtime
from tether_deploy.image_core import image_frame
from tether_deploy.runner_core import RunnerConfig, RunnerCore, StateHeader, TickScheduler, load_policy
from tether_deploy.params import NODE_PARAMS, declare_node_params, node_params, param_specs
from tether_deploy.teleop_map import StickMapper, joy_mapping_from_parameters
from tether_deploy.spin import spin_node


class PolicyRunner(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("policy_runner", **kwargs)
        self.params = declare_node_params(self, "policy_runner")  # every parameter, from params.py

        self.core: RunnerCore | None = None
        self.sched: TickScheduler | None = None
        self.mapper: StickMapper | None = None
        self.estop = EstopLatch()
        self.human: HumanInput | None = None
        self._active = False
        self._timer = None
        self._diag_timer = None
        self._io: list = []
        self._mode = "unconfigured"
        self._last_reason = ""
        self._policy_status = ""
        self._loading = False
        self._latency_us = np.zeros(5000)  # ring buffer of state->command latencies [us]
        self._latency_n = 0
        self._diag_due = False
        self._pending_receive_s: float | None = None
        self._msg_exec = JointState()
        self._msg_policy = JointState()
        self._msg_human = JointState()
        self._msg_flag = Bool()
        self._names: list[str] = []
        self._rejections_at_diag = 0  # rejections counted at the last diagnostics message
        self._commands_sent = 0  # cmd/executed messages published (one per tick that commands)
        self._swap_gap_ms = ""
        self._images_seen = False  # every image input has had a usable image since configure

        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        ok = self.trigger_configure() == TransitionCallbackReturn.SUCCESS and \
            self.trigger_activate() == TransitionCallbackReturn.SUCCESS
        if not ok and self._p("exit_on_autostart_failure"):
            self.get_logger().fatal(f"autostart failed ({self._policy_status or self._mode}): exiting with status 1")
            raise SystemExit(1)

    def _p(self, name: str):
        return self.get_parameter(name).value

    def _config(self) -> RunnerConfig:
        """The core's config from the parameters as they are now (a reconfigure picks up a change)."""
        specs = param_specs(NODE_PARAMS["policy_runner"])
        return node_params("policy_runner", {s.name: self._p(s.name) for s in specs}).core

    # ------------------------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._diag_pub = self._publisher(itf.DIAGNOSTICS)
        self._status_pub = self._publisher(itf.ACTIVE_POLICY)
        self._goal_pub = self._publisher(itf.RUNNER_GOAL)
        policy_dir = str(self._p("policy_dir"))
        try:
            if not policy_dir:
                raise ContractError("parameter policy_dir is empty: give the directory of policy.onnx + policy.json")
            cfg = self._config()
            policy = load_policy(policy_dir)
            self.core = RunnerCore(policy, cfg)
            self.mapper = StickMapper(policy.contract.action, joy_mapping_from_parameters(self))
        except (ContractError, ValueError) as e:
            self._refuse(policy_dir, str(e))
            self._set_mode("unconfigured", f"configure refused: {e}")
            self._publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        c = self.core.contract
        self._images_seen = False
        self.sched = TickScheduler(self.core.period_s, str(self._p("tick_source")))
        self._exec_pub = self._publisher(itf.EXECUTED)
        self._policy_pub = self._publisher(itf.POLICY)
        self._human_pub = self._publisher(itf.HUMAN)
        self._flag_pub = self._publisher(itf.INTERVENTION)
        self._mode_pub = self._publisher(itf.RUNNER_MODE)
        self._int_pub = self._publisher(itf.POS_ERR_INT)
        self._msg_int = Vector3Stamped()
        self._msg_int.header.frame_id = self.core.cfg.world_frame
        self._names = command_names(c.action)
        body = self.core.cfg.body_frame
        for m in (self._msg_exec, self._msg_policy, self._msg_human):
            fill_command(m, self._names, [0.0] * c.action.dim, body)
        sub = lambda t, cb: self.create_subscription(t.msg_class, t.name, cb, t.profile)  # noqa: E731
        self._io = [
            sub(itf.STATE_ODOM, self._on_state), sub(itf.JOY, self._on_joy), sub(itf.ESTOP, self._on_estop),
            sub(itf.GOAL, self._on_goal), sub(itf.LOAD_POLICY, self._on_load_policy),
            self.create_service(itf.RESET_ESTOP.msg_class, itf.RESET_ESTOP.name, self._on_reset_estop),
        ]
        image_t, info_t = itf.DEPTH_IMAGE, itf.DEPTH_CAMERA_INFO  # types and QoS; names from the contract
        for im in c.images:
            self._io += [
                self.create_subscription(image_t.msg_class, im.topic, functools.partial(self._on_image, im.name),
                                         image_t.profile),
                self.create_subscription(info_t.msg_class, im.camera_info_topic,
                                         functools.partial(self._on_camera_info, im.name), info_t.profile)]
        self._accept(policy_dir, policy)
        self._publish_goal()
        self.get_logger().info(
            f"configured {c.task} policy from {policy_dir}: {c.obs_dim} obs -> {c.action.dim} {c.action.type} "
            f"actions at {c.control_rate_hz:g} Hz{self._images_text(c)}, sha256 {c.provenance['onnx_sha256'][:12]}, "
            f"safe behaviour "
            f"{self.core.cfg.safe_behaviour}, tick source {self.sched.source}")
        self._set_mode("inactive", "configured")
        return TransitionCallbackReturn.SUCCESS

    @staticmethod
    def _images_text(c) -> str:
        return "".join(f", image {im.name!r} {im.width}x{im.height} {im.encoding} on {im.topic} (max age "
                       f"{im.max_age_s * 1e3:.0f} ms)" for im in c.images)

    def _publisher(self, t: itf.Topic):
        """A publisher as the interface table declares it (a deadline in control periods on top)."""
        profile = t.profile
        if t.deadline:
            profile = qos.command_with_deadline(self.core.period_s, float(self._p(t.deadline)))
        return self.create_publisher(t.msg_class, t.name, profile)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.get_logger().info(make_realtime(int(self._p("realtime_priority"))))
        except ValueError as e:
            self.get_logger().error(str(e))
            return TransitionCallbackReturn.FAILURE
        self._timer = self.create_timer(self.core.period_s, self._on_timer)
        self._timer_period_ns = self._timer.timer_period_ns
        rate = float(self._p("diagnostics_rate_hz"))
        if rate > 0:
            self._diag_timer = self.create_timer(1.0 / rate, self._on_diag_timer)
        self._active = True
        self._set_mode("active", "activated")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for t in (self._timer, self._diag_timer):
            if t is not None:
                self.destroy_timer(t)
        self._timer = self._diag_timer = None
        self._set_mode("inactive", "deactivated")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for entity in self._io:
            if hasattr(entity, "srv_type"):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        for pub in (self._exec_pub, self._policy_pub, self._human_pub, self._flag_pub, self._int_pub):
            self.destroy_publisher(pub)
        self._io = []
        self.core = self.sched = self.mapper = None
        self._set_mode("unconfigured", "cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return TransitionCallbackReturn.SUCCESS

    # ---------------------------------------------------------------------------------- inputs

    def _on_state(self, msg: Odometry) -> None:
        received = time.monotonic()
        header = StateHeader(msg.header.frame_id, msg.child_frame_id, stamp_to_s(msg.header.stamp),
                             self.get_clock().now().nanoseconds * 1e-9)
        self.core.set_state(odometry_to_quantities(msg), received, header)
        if self._active and self.sched.on_state(received):
            self._tick(received, received)
            self._rearm("state")
        self._log_events()

    def _on_image(self, name: str, msg) -> None:
        self.core.set_image(name, image_frame(msg, time.monotonic()))

    def _on_camera_info(self, name: str, msg) -> None:
        self.core.set_camera_info(name, *camera_info_intrinsics(msg))

    def _log_events(self) -> None:
        """Faults, new causes and recoveries: one line each, never one per message."""
        for level, text in self.core.drain_events():
            if level == "warn":  # rclpy refuses two severities from one call site
                self.get_logger().warn(text)
            else:
                self.get_logger().info(text)

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self.sched.on_timer(now):
            self._tick(now, None)
            self._rearm("timer")
            self._log_events()

    def _rearm(self, after: str) -> None:
        """Restart the fallback timer from this tick (see TickScheduler.timer_period_s)."""
        period_ns = int(self.sched.timer_period_s(after) * 1e9)
        if self._timer_period_ns != period_ns:
            self._timer.timer_period_ns = self._timer_period_ns = period_ns
        self._timer.reset()

    def _on_joy(self, msg: Joy) -> None:
        action, deadman, estop = self.mapper(msg.axes, msg.buttons)
        if estop and not self.estop.latched:
            self.get_logger().error("e-stop pressed on the gamepad: motors off until runner/reset_estop")
        self.estop.update(estop, "joy")
        self.human = HumanInput(action, deadman, time.monotonic())

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estop.latched:
            self.get_logger().error("e-stop on the estop topic: motors off until runner/reset_estop")
        self.estop.update(msg.data, "topic")

    def _on_reset_estop(self, request, response):
        response.success, response.message = self.estop.reset()
        self.get_logger().info(response.message)
        return response

    def _on_goal(self, msg: PointStamped) -> None:
        problem = self.core.set_goal([msg.point.x, msg.point.y, msg.point.z])
        if problem:
            self.get_logger().warn(problem)
        else:
            self._publish_goal()

    def _publish_goal(self) -> None:
        """The goal in force, latched on runner/goal, so the recorder's logs carry it."""
        msg = PointStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        fill_point_stamped(msg, self.core.goal_w)
        self._goal_pub.publish(msg)

    # -------------------------------------------------------------------------------- the tick

    def _tick(self, now: float, received: float | None) -> None:
        if self.core.state is None:
            # Never had a usable state: the vehicle is not flying yet; commanding it would start it blind.
            if self._mode != "waiting":
                why = f" (rejected: {self.core.last_rejection})" if self.core.last_rejection else ""
                self._set_mode("waiting", f"waiting for the first usable state message{why}")
            return
        if not self._images_seen:
            waiting = self.core.images_waiting()
            if waiting is not None:  # never saw the camera: commanding the vehicle would start it blind
                if self._mode != "waiting" or waiting != self._last_reason:
                    self._set_mode("waiting", f"waiting for the first usable image ({waiting})", waiting)
                return
            self._images_seen = True
        swaps = self.core.swaps
        r = self.core.tick(now, self.human, self.estop.latched, self.get_clock().now().nanoseconds * 1e-9)
        stamp = self.get_clock().now().to_msg()
        self._msg_exec.header.stamp = stamp
        self._msg_exec.position = r.executed.tolist()
        self._exec_pub.publish(self._msg_exec)
        self._commands_sent += 1
        if received is not None:
            self._latency_us[self._latency_n % len(self._latency_us)] = (time.monotonic() - received) * 1e6
            self._latency_n += 1
        if r.policy_action is not None:
            self._msg_policy.header.stamp = stamp
            self._msg_policy.position = r.policy_action.tolist()
            self._policy_pub.publish(self._msg_policy)
        if r.pos_err_int_w is not None:  # the runner's memory, stamped as the tick's commands
            self._msg_int.header.stamp = stamp
            v = self._msg_int.vector
            v.x, v.y, v.z = (float(x) for x in r.pos_err_int_w)
            self._int_pub.publish(self._msg_int)
        if r.human_action is not None:
            self._msg_human.header.stamp = stamp
            self._msg_human.position = r.human_action.tolist()
            self._human_pub.publish(self._msg_human)
        if self.core.swaps != swaps and self.sched.prev_tick_s is not None:
            # a figure for the diagnostics, not a test bound: the swap's tick vs the one before
            self._swap_gap_ms = f"{(now - self.sched.prev_tick_s) * 1e3:.1f}"
        self._msg_flag.data = r.intervention
        self._flag_pub.publish(self._msg_flag)
        key = r.mode.split(" (", 1)[0]  # e.g. policy, human, safe:hold, safe:land_open_loop, estop
        if key != self._mode:
            self._set_mode(key, r.mode, r.reason)
        elif self._diag_due:
            self._publish_diagnostics()

    def _set_mode(self, mode: str, text: str, reason: str = "") -> None:
        """Publish (latched) and log a mode change; the text carries the reason."""
        self._mode, self._last_reason = mode, reason
        if hasattr(self, "_mode_pub"):
            self._mode_pub.publish(String(data=text))
        if mode.startswith("safe") or mode == "estop":
            self.get_logger().warn(f"mode -> {text}")
        else:
            self.get_logger().info(f"mode -> {text}")
        if hasattr(self, "_diag_pub"):
            self._publish_diagnostics()

    # ------------------------------------------------------------------------------ hot swap

    def _on_load_policy(self, msg: String) -> None:
        if self._loading:
            self._refuse(msg.data, "another policy is still loading")
            return
        self._loading = True
        threading.Thread(target=self._load_in_background, args=(msg.data,), daemon=True).start()

    def _load_in_background(self, policy_dir: str) -> None:
        make_background()  # loading must not compete with the (real-time) tick
        try:
            policy = load_policy(policy_dir, running=self.core.contract)
            self.core.offer_policy(policy)
        except (ContractError, ValueError, OSError) as e:
            self._loading = False
            self._refuse(policy_dir, str(e), from_loader=True)
            return
        self._loading = False
        self._accept(policy_dir, policy)

    def _accept(self, policy_dir: str, policy) -> None:
        sha = policy.contract.provenance["onnx_sha256"]
        self._policy_status = f"active {sha} {policy_dir}"
        self._status_pub.publish(String(data=self._policy_status))
        self.get_logger().info(f"policy {policy_dir} (sha256 {sha[:12]}) accepted")
        note = compat_note(policy.contract)  # an older contract: once per policy, what it cannot tell us
        if note:
            self.get_logger().warn(note)

    def _refuse(self, policy_dir: str, reason: str, from_loader: bool = False) -> None:
        running = self.core.contract.provenance["onnx_sha256"] if self.core is not None else None
        self._policy_status = f"rejected {policy_dir}: {reason}"
        self._status_pub.publish(String(data=self._policy_status))
        keep = f"; keeps running {running[:12]}" if running else ""
        self.get_logger().error(f"policy {policy_dir!r} refused: {reason}{keep}")
        if from_loader:
            # the loader thread must not read the tick counters while a tick is half done (ticks counted,
            # its command not yet): the next tick publishes them, or the diagnostics timer when idle
            self._on_diag_timer()
        else:
            self._publish_diagnostics()

    # ---------------------------------------------------------------------------- diagnostics

    def _on_diag_timer(self) -> None:
        """Periodic diagnostics go out right after the next tick, in the slack before the next state,
        never in the way of one (a timer callback can land just before a state message)."""
        if self.sched is not None and self.sched.last_tick_s is not None and \
                time.monotonic() - self.sched.last_tick_s < 5 * self.core.period_s:
            self._diag_due = True
        else:  # not ticking (waiting, inactive): nothing to disturb
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        self._diag_due = False
        st = DiagnosticStatus(name="tether/policy_runner", hardware_id=self.get_name())
        rejections = self.core.rejections if self.core is not None else {}
        rejected = sum(rejections.values())
        if self._mode in ("policy", "human", "active", "inactive", "waiting"):
            st.level, st.message = DiagnosticStatus.OK, self._mode
            # WARN while a fault is in force or messages were rejected since the last report; back to OK
            # once the state is good again (the counts stay in the values)
            new = rejected - self._rejections_at_diag
            if (self.core is not None and self.core.recovering) or new:
                st.level = DiagnosticStatus.WARN
                st.message = f"{self._mode}; {new} state messages rejected since the last report"
        elif self._mode == "unconfigured":
            st.level, st.message = DiagnosticStatus.ERROR, f"unconfigured {self._last_reason}".strip()
        else:
            st.level, st.message = DiagnosticStatus.ERROR, f"{self._mode}: {self._last_reason}"
        self._rejections_at_diag = rejected
        values = {"mode": self._mode, "reason": self._last_reason, "policy": self._policy_status,
                  "estop_latched": str(self.estop.latched), "rejected_states": str(rejected)}
        if self.core is not None:
            values.update({f"rejected_{k}": str(n) for k, n in sorted(rejections.items())})
            values.update(last_rejection=self.core.last_rejection, state_faults=str(self.core.faults),
                          state_recovering=str(self.core.recovering), policy_swaps=str(self.core.swaps))
            if self.core.images:
                values.update(image_unusable_ticks=str(sum(self.core.image_problems.values())),
                              last_image_problem=self.core.last_image_problem)
                values.update({f"image_{k}": str(n) for k, n in sorted(self.core.image_problems.items())})
        if self._swap_gap_ms:
            values.update(last_swap_tick_gap_ms=self._swap_gap_ms)
        if self.sched is not None:
            values.update(ticks=str(self.sched.ticks), missed_ticks=str(self.sched.missed),
                          commands_sent=str(self._commands_sent))
        if self._latency_n:
            p50, p99 = np.percentile(self._latency_us[:min(self._latency_n, len(self._latency_us))], (50, 99))
            values.update(state_to_command_p50_us=f"{p50:.1f}", state_to_command_p99_us=f"{p99:.1f}")
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args=None) -> None:
    spin_node(PolicyRunner, args)


if __name__ == "__main__":
    main()
