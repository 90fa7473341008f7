# The robot image: Tether's robot side, the tether-robot distribution (robot/), and nothing of the
# training side: no torch, sim/, policies/, calibration/ or tether_app/. It runs the policy runner, the
# recorder, the keyboard teleop and the robot bridge (Crazyflie over cflib, PX4/ArduPilot over pymavlink)
# as ROS 2 nodes; rclpy comes from the ros-jazzy-* wheels (a robot with a system ROS 2 Jazzy install can
# instead `pip install ./robot` into it).
#
#   docker build -f Dockerfile.robot -t tether-robot .
#
# Two stages: the first builds the wheel from the sources robot/setup.py reads (only those are copied);
# the image installs that wheel with its extras, then proves torch and the simulator are absent.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml ./
COPY robot/ robot/
COPY tether/ tether/
COPY hardware/ hardware/
COPY ros2_ws/src/tether_deploy/ ros2_ws/src/tether_deploy/
RUN pip install --no-cache-dir --disable-pip-version-check "setuptools>=68" \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels ./robot

FROM python:3.11-slim
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && pip install --upgrade pip
COPY --from=wheel /wheels /wheels
RUN pip install "$(ls /wheels/tether_robot-*.whl)[ros-wheels,crazyflie,mavlink]" && rm -rf /wheels \
    && python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'sim', 'policies', 'calibration', \
'tether_app', 'pybullet') if u.find_spec(m)]; sys.exit('the robot image holds ' + str(bad) if bad else 0)"

WORKDIR /opt/tether
ENV ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp
CMD ["tether-robot", "--help"]
