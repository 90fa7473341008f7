"""Twin bring-up on a full ROS 2 install: ros2 launch tether_deploy twin.launch.py policy_dir:=/path/to/policy

The same processes as `tether deploy --robot twin` (wheel-only installs). The runner is a lifecycle node
started with autostart (configure + activate); set autostart:=false to drive it with `ros2 lifecycle`.
As under `tether deploy`, the twin ends after a crash and the launch shuts down when the twin or the
runner exits (the parameters are checked by the nodes at start: an invalid one ends that node).
DDS discovery stays on this machine unless ROS_AUTOMATIC_DISCOVERY_RANGE is already set.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node


def generate_launch_description():
    config = os.path.join(get_package_share_directory("tether_deploy"), "config")
    policy_dir = LaunchConfiguration("policy_dir")
    record = LaunchConfiguration("record")
    args = [
        DeclareLaunchArgument("policy_dir", description="directory with policy.onnx + policy.json"),
        DeclareLaunchArgument("twin_params", default_value=os.path.join(config, "twin.yaml")),
        DeclareLaunchArgument("runner_params", default_value=os.path.join(config, "runner.yaml")),
        DeclareLaunchArgument("record", default_value="", description="bag directory; empty = no recording"),
        DeclareLaunchArgument("autostart", default_value="true"),
    ]
    env = [SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                  os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))]
    nodes = [
        Node(package="tether_deploy", executable="twin", name="twin", output="screen", on_exit=Shutdown(),
             parameters=[LaunchConfiguration("twin_params"), {"policy_dir": policy_dir, "exit_on_crash": True}]),
        LifecycleNode(package="tether_deploy", executable="policy_runner", name="policy_runner", namespace="",
                      output="screen", on_exit=Shutdown(),
                      parameters=[LaunchConfiguration("runner_params"),
                                  {"policy_dir": policy_dir, "autostart": LaunchConfiguration("autostart")}]),
        Node(package="tether_deploy", executable="recorder", name="recorder", output="screen",
             parameters=[os.path.join(config, "recorder.yaml"), {"output": record, "policy_dir": policy_dir}],
             condition=IfCondition(PythonExpression(["'", record, "' != ''"]))),
    ]
    return LaunchDescription(args + env + nodes)
