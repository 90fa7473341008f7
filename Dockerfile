# The training image: the whole of Tether (torch, the simulator, the twin, the `tether` command line);
# docker-compose.yml's train, tensorboard and twin services run it. The robot side has its own image
# without torch (Dockerfile.robot).
#
#   docker build -t tether:cpu .                                   # CPU torch (the default)
#   docker build --build-arg TORCH_VARIANT=cu124 -t tether:cu124 .  # CUDA 12.4 torch, for GPU training
#
# TORCH_VARIANT names the PyTorch wheel index of the build the image is meant for (cpu, cu124, cu126,
# cu128, ...): torch is installed from that index first, explicitly, so the image never depends on the
# pip configuration of the machine that builds it, and the project's own install then finds it satisfied.
# The CUDA wheels bring their CUDA runtime with them; the host needs only the NVIDIA driver and the
# container toolkit (the train service's GPU reservation in docker-compose.yml).
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}

RUN apt-get update && apt-get install -y --no-install-recommends make git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && pip install --upgrade pip

# torch first, in its own layer: the largest download, and the one the build argument chooses
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import sys, torch; v = '${TORCH_VARIANT}'; cuda = torch.version.cuda; \
ok = cuda is None if v == 'cpu' else (cuda or '').replace('.', '') == v.removeprefix('cu'); \
print('torch', torch.__version__, 'cuda', cuda); sys.exit(0 if ok else 'torch build does not match TORCH_VARIANT=' + v)"

WORKDIR /opt/tether
COPY . .
# editable: `tether deploy` finds the ROS package's config/ and launch/ beside its sources
RUN pip install -e ".[ros-wheels]"

ENV ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp \
    TORCH_VARIANT=${TORCH_VARIANT}
CMD ["tether", "--help"]
