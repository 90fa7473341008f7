# One image for every Tether service; the compose file picks the command. Training runs on CPU here
# (pass a CUDA base and torch build for GPUs); the robot side needs only numpy, onnxruntime and rclpy.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/tether
COPY . .
RUN bash scripts/setup.sh /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp
CMD ["tether", "--help"]
