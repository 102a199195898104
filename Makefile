# The README's commands. Each target sets up .venv on first use (tools/bootstrap.sh).
VENV ?= $(if $(ROS_DISTRO),.venv-ros-$(ROS_DISTRO),.venv)
PY := $(VENV)/bin/python
SETUP := $(VENV)/.bootstrap-stamp

.PHONY: setup demo test bench bench-fleet lint lock clean

setup:
	@tools/bootstrap.sh $(VENV)

demo: setup
	$(PY) -m perception_nodes.demo

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) -m perception_nodes.graph_bench

# evaluate --bags on 1 and 2 Ray workers vs one process, on 8 recorded bags (a few minutes).
bench-fleet: setup
	$(PY) -m perception_core.fleet_bench

# --extend-exclude: a venv named other than .venv (ROS mode, another Python) lies in the tree.
lint: setup
	$(VENV)/bin/ruff check --extend-exclude $(VENV) .

# Re-pin exact versions after changing a requirements/*.txt file. Each Python (3.10-3.13) has its
# own requirements/constraints-py3.X.txt; this writes the venv's. For another Python:
#   make lock PYTHON=python3.10 VENV=.venv-py3.10
# A Python without a file installs the newest releases, which this then pins; to move a Python's
# pins to newer releases, delete its file and its venv first.
lock: setup
	@test -z "$(ROS_DISTRO)" || { echo "[lock] pins the pip-wheel venv: run it without a sourced ROS 2"; exit 1; }
	@ver=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	out=requirements/constraints-py$$ver.txt; \
	$(VENV)/bin/pip freeze --exclude vision-msgs | grep -v -E '^(-e|#)|@ file' \
	  | sed "1i # Exact versions for Python $$ver, resolved on $$(date +%F) (pip freeze of a working venv). Regenerate: make lock" \
	  > $$out; \
	echo "[lock] wrote $$out"

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache
