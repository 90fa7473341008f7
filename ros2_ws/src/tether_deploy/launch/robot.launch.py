"""Real-robot bring-up: TETHER_ADAPTER=<name> ros2 launch tether_deploy robot.launch.py policy_dir:=...

Same runner and recorder as the twin; the robot side comes from two slots:
  * the ADAPTER slot: the twin's own node, or for a hardware adapter (crazyflie, px4, ardupilot, arm:
    hardware/adapters.py) the robot_bridge node with ``adapter`` set: the adapter under the shared safety
    layer (hardware/safety.py) behind the same ROS interface as the twin (state/odom + state/imu out,
    cmd/executed in, robot/arm, robot/land, robot/estop services). Its parameters (safety.*, robot.*)
    come from the robot_params YAML; `tether deploy --robot NAME` checks the same ones before starting;
  * the GAMEPAD slot: the joy package's joy_node publishes the real gamepad on `joy`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node

# adapter name -> (package, executable, parameter file in config/ or None). The hardware adapters run in
# robot_bridge (its parameters: the robot_params launch argument).
ADAPTERS = {
    "twin": ("tether_deploy", "twin", "twin.yaml"),
    **{name: ("tether_deploy", "robot_bridge", None) for name in ("crazyflie", "px4", "ardupilot", "arm")},
}


def generate_launch_description():
    config = os.path.join(get_package_share_directory("tether_deploy"), "config")
    policy_dir = LaunchConfiguration("policy_dir")
    record = LaunchConfiguration("record")
    adapter = os.environ.get("TETHER_ADAPTER", "twin")
    if adapter not in ADAPTERS:
        raise RuntimeError(f"TETHER_ADAPTER={adapter!r} is not one of {sorted(ADAPTERS)}")
    pkg, exe, params = ADAPTERS[adapter]
    args = [
        DeclareLaunchArgument("policy_dir", description="directory with policy.onnx + policy.json"),
        DeclareLaunchArgument("runner_params", default_value=os.path.join(config, "runner.yaml")),
        DeclareLaunchArgument("record", default_value=""),
        DeclareLaunchArgument("robot_params", default_value="",
                              description="robot_bridge parameter YAML (safety.*, robot.*); empty: the defaults"),
        DeclareLaunchArgument("joy_device", default_value="/dev/input/js0"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="on a robot, activate the runner deliberately (ros2 lifecycle set)"),
    ]
    env = [SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                  os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))]
    nodes = [
        Node(package=pkg, executable=exe, name=exe, output="screen",
             parameters=[os.path.join(config, params), {"policy_dir": policy_dir}]) if params else
        OpaqueFunction(function=lambda context: [Node(
            package=pkg, executable=exe, name=exe, output="screen",
            parameters=[p for p in (LaunchConfiguration("robot_params").perform(context),) if p] +
                       [{"adapter": adapter, "policy_dir": policy_dir, "exit_on_link_loss": True}])]),
        Node(package="joy", executable="joy_node", name="joy", output="screen",
             parameters=[{"device_name": "", "autorepeat_rate": 20.0, "deadzone": 0.05}]),
        LifecycleNode(package="tether_deploy", executable="policy_runner", name="policy_runner", namespace="",
                      output="screen",
                      parameters=[LaunchConfiguration("runner_params"),
                                  {"policy_dir": policy_dir, "autostart": LaunchConfiguration("autostart"),
                                   "realtime_priority": 50}]),  # SCHED_FIFO on the robot (realtime.py)
        Node(package="tether_deploy", executable="recorder", name="recorder", output="screen",
             parameters=[os.path.join(config, "recorder.yaml"), {"output": record, "policy_dir": policy_dir}],
             condition=IfCondition(PythonExpression(["'", record, "' != ''"]))),
    ]
    return LaunchDescription(args + env + nodes)
