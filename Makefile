# Set-up and the two commands the README gives. Everything installs into .venv/.
# Re-running is fast: the venv is rebuilt only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PKGS := xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3 prusa-slicer admesh
# Torch pinned to the CPU wheel, in the same pip command as everything that
# needs it: a bare "torch" requirement, or nnunetv2's chain (timm ->
# torchvision) installed in a later command, pulls a newer multi-GB CUDA build.
# pyproject keeps a range.
TORCH ?= torch==2.13.0

.PHONY: demo test install apt lint clean sample-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[all,bench,dev,nnunet]"
	touch $(STAMP)

install: $(STAMP)

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	$(BIN)/medrecon demo -o demo_out

# one BLAS/OpenMP thread per test process: busy-waiting threads on a loaded
# 2-core machine run many times slower than one
test: install apt
	$(BIN)/ruff check medrecon napari_plugin tests bench scripts
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check medrecon napari_plugin tests bench scripts

sample-data: install
	$(BIN)/medrecon phantom sample_data --seed 0 --format dicom --slices 72 --thickness 3

clean:
	rm -rf $(VENV) demo_out
