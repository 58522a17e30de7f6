# Two commands matter: `make demo` and `make test`. Both build the virtual environment
# (.venv) from the lock first; nothing outside this folder is changed.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv

.PHONY: setup demo test check bench lock clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(VENV)/bin/kiosk demo

test: setup
	$(VENV)/bin/pytest

check: setup
	scripts/check

bench: setup
	scripts/bench

lock: $(UV)
	$(UV) lock
	$(UV) export --frozen --no-emit-project --no-dev --format requirements-txt -o requirements.lock --quiet

clean:
	rm -rf .tools $(VENV) demo-state bench-results .pytest_cache .mypy_cache .ruff_cache
