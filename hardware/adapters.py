"""The registry of Robot adapters: name -> (module, class, config dataclass), imported only when chosen,
so that a driver's library (cflib, pymavlink, rclpy) is needed only by the adapter that uses it.

Each adapter is ``Class(cfg)`` with ``cfg`` an instance of its frozen config dataclass; the robot bridge
node generates its ROS parameters from that dataclass (one definition)."""

from __future__ import annotations

import dataclasses
import importlib

ADAPTERS: dict[str, tuple[str, str, str]] = {
    "twin": ("hardware.twin", "DigitalTwin", "TwinConfig"),
    "crazyflie": ("hardware.crazyflie", "Crazyflie", "CrazyflieCfg"),
    "px4": ("hardware.mavlink", "MavlinkVehicle", "Px4Cfg"),
    "ardupilot": ("hardware.mavlink", "MavlinkVehicle", "ArduPilotCfg"),
    "arm": ("hardware.arm", "Ros2Arm", "ArmCfg"),
}


def adapter_names() -> list[str]:
    return sorted(ADAPTERS)


def adapter_classes(name: str) -> tuple[type, type]:
    """(Robot subclass, its config dataclass) of adapter ``name``; KeyError names the available ones."""
    if name not in ADAPTERS:
        raise KeyError(f"no robot adapter {name!r}; available: {adapter_names()}")
    module_name, cls_name, cfg_name = ADAPTERS[name]
    module = importlib.import_module(module_name)
    cfg_cls = getattr(module, cfg_name)
    if not dataclasses.is_dataclass(cfg_cls):
        raise TypeError(f"{module_name}.{cfg_name} must be a dataclass")
    return getattr(module, cls_name), cfg_cls
