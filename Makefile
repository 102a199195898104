# The README's commands. Each target sets up .venv on first use (tools/bootstrap.sh).
VENV ?= $(if $(ROS_DISTRO),.venv-ros-$(ROS_DISTRO),.venv)
PY := $(VENV)/bin/python
SETUP := $(VENV)/.bootstrap-stamp

.PHONY: setup demo test bench lint lock clean

setup:
	@tools/bootstrap.sh $(VENV)

demo: setup
	$(PY) -m perception_nodes.demo

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) -m perception_core bench

lint: setup
	$(VENV)/bin/ruff check .

# Re-resolve exact versions after changing a requirements/*.txt file.
lock: setup
	$(VENV)/bin/pip freeze --exclude vision-msgs | grep -v -E '^(-e|#)|@ file' \
	  | sed '1i # Exact versions resolved on $(shell date +%F) (pip freeze of a working venv). Regenerate: make lock' \
	  > requirements/constraints.txt

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache
