"""Real-robot bring-up: ros2 launch tether_deploy robot.launch.py policy_dir:=... adapter:=<name>

Same runner and recorder as the twin; the robot side comes from two slots:
  * the ADAPTER slot: a node that implements hardware.robot.Robot behind the same ROS interface as the
    twin node (publishes state/odom + state/imu, executes cmd/executed by the contract's action spec,
    cuts the motors when commands stop). Crazyflie (cflib) and MAVLink (pymavlink) adapters go here;
  * the GAMEPAD slot: the joy package's joy_node publishes the real gamepad on `joy`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node

# adapter name -> (package, executable, parameter file in config/). Add the hardware adapters here.
ADAPTERS = {
    "twin": ("tether_deploy", "twin", "twin.yaml"),
    # "crazyflie": ("tether_deploy", "crazyflie_adapter", "crazyflie.yaml"),
    # "mavlink": ("tether_deploy", "mavlink_adapter", "mavlink.yaml"),
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
        DeclareLaunchArgument("joy_device", default_value="/dev/input/js0"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="on a robot, activate the runner deliberately (ros2 lifecycle set)"),
    ]
    env = [SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                  os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))]
    nodes = [
        Node(package=pkg, executable=exe, name=exe, output="screen",
             parameters=[os.path.join(config, params), {"policy_dir": policy_dir}]),
        Node(package="joy", executable="joy_node", name="joy", output="screen",
             parameters=[{"device_name": "", "autorepeat_rate": 20.0, "deadzone": 0.05}]),
        LifecycleNode(package="tether_deploy", executable="policy_runner", name="policy_runner", namespace="",
                      output="screen",
                      parameters=[LaunchConfiguration("runner_params"),
                                  {"policy_dir": policy_dir, "autostart": LaunchConfiguration("autostart"),
                                   "realtime_priority": 50}]),  # SCHED_FIFO on the robot (realtime.py)
        Node(package="tether_deploy", executable="recorder", name="recorder", output="screen",
             parameters=[os.path.join(config, "recorder.yaml"), {"output": record}],
             condition=IfCondition(PythonExpression(["'", record, "' != ''"]))),
    ]
    return LaunchDescription(args + env + nodes)
