# The two commands of the README: `make demo` and `make test`.
# Each creates .venv when it is missing, installs the project into it, then does its job.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: demo test test-slow bench install clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the package metadata changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# A ~5,000-account book, the nightly job on it on a local Ray instance, its approval by rules.toml
# and its report, and the check of every rule.
demo: $(STAMP)
	$(VENV)/bin/canopy generate --accounts 5000 --seed 7 --out $(DEMO)/book --overwrite
	$(VENV)/bin/canopy validate --book $(DEMO)/book --examples 1
	$(VENV)/bin/canopy run --book $(DEMO)/book --out $(DEMO)/runs --config canopy.toml --replace
	$(VENV)/bin/canopy approve --run $(DEMO)/runs --rules rules.toml --replace
	$(VENV)/bin/canopy report --run $(DEMO)/runs --replace
	$(VENV)/bin/canopy check --book $(DEMO)/book --run $(DEMO)/runs

# tests/test_report.py renders the report in headless Chromium (skipped without it): install the Debian
# package where this runs as root with apt-get (CI), quietly; never fail the build over it.
chromium:
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium is not installed: the browser tests of the report and the portal will be skipped"

test: $(STAMP) chromium
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(DEMO) out .pytest_cache .hypothesis
