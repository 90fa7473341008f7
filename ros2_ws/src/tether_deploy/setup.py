from glob import glob

from setuptools import find_packages, setup

package_name = "tether_deploy"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Tether",
    maintainer_email="tether@example.com",
    description="Tether deploy side: policy runner, takeover arbitration, teleop, twin bridge, recorder",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "policy_runner = tether_deploy.runner_node:main",
            "twin = tether_deploy.twin_node:main",
            "robot_bridge = tether_deploy.bridge_node:main",
            "keyboard_teleop = tether_deploy.keyboard_teleop:main",
            "recorder = tether_deploy.recorder_node:main",
            "operator = tether_deploy.operator_node:main",
        ],
    },
)
