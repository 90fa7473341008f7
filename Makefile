# The two commands of the README: `make demo` (main job) and `make test`. Both set the environment up
# on first use (scripts/setup.sh), so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast setup bench robot-wheel

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/tether demo

# two workers (this project's machines have 2 cores): tests take their ROS domains from per-worker sets
# (tests/ros2/conftest.fresh_domain_id); worksteal balances the long tests between the workers
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist worksteal

# development loop: everything but the ROS 2 process tests and the slow ones (CI runs `make test`)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not ros and not slow"

bench: $(VENV)/.installed
	$(PY) bench/time_to_hover.py
	$(PY) bench/bench_sim_throughput.py
	$(PY) bench/bench_ros2_latency.py
	$(PY) bench/bench_robot_install.py

# the robot side alone (robot/: tether-robot, no torch) as a wheel in build/wheels/, for `pip install` on a robot
robot-wheel: $(VENV)/.installed
	$(PY) -m pip wheel --no-deps --no-build-isolation -w build/wheels ./robot
