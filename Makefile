# trainmon: `make demo` runs a simulated training run with the exporter; `make test` runs every check.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
# Debian packages run for real, binary -> package: the demo's stack, and what the tests add to it.
DEMO_APT := prometheus:prometheus prometheus-pushgateway:prometheus-pushgateway \
	prometheus-alertmanager:prometheus-alertmanager
APT_NEEDS := $(DEMO_APT) promtool:prometheus amtool:prometheus-alertmanager \
	initdb:postgresql pg_ctl:postgresql chromium:chromium kubectl:kubernetes-client

.PHONY: demo test lint system-packages venv dashboards kubernetes clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the frameworks of the dev extra (lightning, transformers, accelerate) require torch, and pip
	# keeps the one installed when it satisfies them; the other order would pull another torch, then replace it.
	$(PIP) install -q torch==2.13.0  # SDK tests: checkpoints, histograms, graphs (a local CPU build here)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

# What `make demo` needs, nothing more (no torch, no test toolchain): the API server, YAML for the stack's config,
# numpy and pillow for the images and histograms it logs.
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[demo]'
	touch $(DEMO_STAMP)

venv: $(STAMP)

# The main job on embedded defaults: the metadata API and its dashboard on SQLite (./demo-data, port 5000 when
# free), a simulated trainer shipping to it, Prometheus discovering it via /api/sd with the repo's rules,
# Alertmanager; it prints the dashboard URL first; Ctrl-C finishes the run and stops all.
demo: DEMO_ONLY := 1
demo: system-packages $(DEMO_STAMP)
	$(PY) -m devtools.demo

# Installs the Debian packages above when one of their binaries is missing (root, or sudo when present).
system-packages:
	@missing=""; for pair in $(if $(DEMO_ONLY),$(DEMO_APT),$(APT_NEEDS)); do bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  if ! command -v $$bin >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/$$bin >/dev/null 2>&1; then \
	    missing="$$missing $$pkg"; fi; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$(echo $$missing | tr ' ' '\n' | sort -u); \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: system-packages $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

dashboards: $(STAMP)
	$(PY) grafana/dashboards/generate.py

# deploy/kubernetes/generated/ from prometheus/rules, grafana/dashboards and alertmanager (one source of each).
kubernetes: $(STAMP)
	$(PY) deploy/render_kubernetes.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
