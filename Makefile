# Two commands matter: `make demo` and `make test`. Both build the virtual environment
# (.venv) from the lock first; nothing outside this folder is changed.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
# The development environment has both targets (and the demo, which composes them); `pi`
# is left out: picamera2 installs only on Raspberry Pi OS.
DEV_EXTRAS := --extra kiosk --extra cloud --extra cloud-enrol --extra demo
# One pip lock per install target, exported from uv.lock (which covers all of them).
TARGET_LOCKS := kiosk cloud cloud-enrol

.PHONY: setup demo test check bench lock clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON) $(DEV_EXTRAS)
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
	for target in $(TARGET_LOCKS); do \
		$(UV) export --frozen --no-emit-project --no-dev --extra $$target \
			--format requirements-txt -o requirements-$$target.lock --quiet || exit 1; \
	done

clean:
	rm -rf .tools $(VENV) demo-state bench-results .pytest_cache .mypy_cache .ruff_cache
