"""Tether deploy side (ROS 2, ament_python): policy runner, takeover arbitration, teleop, twin bridge,
recorder. Node logic lives in rclpy-free modules (runner_core, arbitration, teleop_map, conversions,
actuation, bag); the *_node modules only move messages."""
