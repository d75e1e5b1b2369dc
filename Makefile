# The two commands a new user needs (README): `make demo` and `make test`.
# Each does its own set-up and is idempotent: a second run only re-checks stamps.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Keep the offline tool chain off the network (ultralytics, OpenVINO telemetry).
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export YOLO_CONFIG_DIR := $(CURDIR)/build/ultralytics
export OPENVINO_TELEMETRY_ENABLE := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

APT_TEST := mosquitto mosquitto-clients gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 \
            gstreamer1.0-plugins-base gstreamer1.0-plugins-good python3-gi gir1.2-gstreamer-1.0 chromium \
            aravis-tools aravis-tools-cli gir1.2-aravis-0.8 iproute2
APT_DEMO := mosquitto

.PHONY: demo test setup setup-full apt-test apt-demo venv-gi model bench schemas calibration clean labelstudio

demo: setup apt-demo
	$(VENV)/bin/inspector demo --config configs/demo.yaml

test: setup-full apt-test venv-gi labelstudio
	$(VENV)/bin/ruff check --select F,E9,I inspector tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider tests

# --- set-up -----------------------------------------------------------------------------------
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip wheel setuptools

$(VENV)/.runtime-stamp: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[demo]'
	touch $@

# train + dev extras: torch/ultralytics (parity tests, model rebuild) and the test tools.
$(VENV)/.full-stamp: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[demo,train,dev,opcua]'
	touch $@ $(VENV)/.runtime-stamp

# Label Studio for the review round-trip test (tests/review/test_labelstudio.py): its own venv, never the
# runtime's (it pins its own Django stack; ~1 min from a package mirror, ~3 min from PyPI).
LS_VENV := build/labelstudio-venv
$(LS_VENV)/.stamp:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q -U pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==1.23.2
	touch $@
labelstudio: $(LS_VENV)/.stamp

setup: $(VENV)/.runtime-stamp
setup-full: $(VENV)/.full-stamp

# Debian packages: installed only when missing, so a second run costs nothing.
apt-test:
	@missing=$$(for p in $(APT_TEST); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi
# GenICam tests (source.kind genicam) use Aravis through gi inside the venv. Debian's python3-gi is built
# for the system CPython; a .pth puts only its `gi` package on the venv's path (no other system package),
# which loads where the venv's CPython has the same minor version (the extension ABI). Elsewhere:
# pip install '.[genicam]' (builds PyGObject; needs libgirepository1.0-dev libcairo2-dev).
venv-gi: setup apt-test
	@$(PY) -c 'import gi' 2>/dev/null || { \
	  site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  mkdir -p $(VENV)/system-gi && ln -sfn /usr/lib/python3/dist-packages/gi $(VENV)/system-gi/gi && \
	  echo "$(CURDIR)/$(VENV)/system-gi" > "$$site/inspector-system-gi.pth"; }
	@$(PY) -c 'import gi; gi.require_version("Aravis", "0.8"); from gi.repository import Aravis' || { \
	  echo "the venv cannot load Aravis through gi: its Python is not the system's minor version;" \
	       "pip install '.[genicam]' (needs libgirepository1.0-dev libcairo2-dev)"; exit 1; }
apt-demo:
	@dpkg-query -W -f='$${Status}' mosquitto 2>/dev/null | grep -q "ok installed" || \
	  { { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_DEMO); } || \
	    echo "mosquitto could not be installed: the demo falls back to the embedded (demo-only) broker"; }

# --- model tool chain (train extra) -------------------------------------------------------------
calibration: setup-full
	$(VENV)/bin/inspector synth --out calibration --n 300 --seed 3003

# Rebuilds models/demo from nothing: data, training (~50 min on 2 cores: 1500 images x 30 epochs at 320 px), INT8, thresholds, card.
# The synthetic line is just a dataset here (the same commands a plant runs on its own data, docs/your-own-data.md).
model: setup-full calibration
	$(VENV)/bin/inspector synth --out build/data --split train --n 1500 --seed 1001
	$(VENV)/bin/inspector synth --out build/data --split val --n 200 --seed 2002
	$(VENV)/bin/inspector train --data build/data/data.yaml --out build/train --imgsz 320 --epochs 30 --augment fixed-camera
	$(VENV)/bin/inspector synth --out build/quant-val --n 300 --seed 2002
	$(VENV)/bin/inspector quantize --model build/train/fp32/model.xml --calibration calibration/images --out build/int8/model.xml \
	  --max-drop 0.004 --val-data build/quant-val/data.yaml
	$(VENV)/bin/inspector model --fp32 build/train/fp32/model.xml --int8 build/int8/model.xml --out models/demo \
	  --calibration calibration/images --version 1.1.0 --command "make model"

schemas: setup
	$(VENV)/bin/inspector schema --out schemas

bench: setup-full
	$(VENV)/bin/inspector bench --model models/demo --json build/bench.json
	$(PY) -m pytest -q benchmarks --benchmark-only

clean:
	rm -rf build var .pytest_cache
