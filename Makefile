# Every target creates .venv on first use, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
HUB    := $(VENV)/bin/hub
STAMP  := $(VENV)/.installed
# when make started, so the demo's time includes the install
T0     := $(shell date +%s)

export GX_ANALYTICS_ENABLED := false
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: demo airflow-ui test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(HUB) airflow demo --since $(T0)

airflow-ui: $(STAMP)
	$(HUB) airflow ui

test: $(STAMP)
	$(HUB) privacy check
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench.e2e --residents 200000
	@echo "a whole city: $(PY) -m bench.e2e --residents 1000000 (or 2200000) [--workdir DIR to keep the data]"
	@echo "one stage at a time: $(PY) -m bench [generate protect ingest link publish e2e]"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy hub connectors schemas privacy linkage publish simulators service dags

clean:
	rm -rf $(VENV) var
