# cuekit: `make demo` and `make test` work from a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cuekit-installed
# torch and torchvision are pinned to the builds this project's machines carry on disk,
# installed first so that nothing later pulls a second torch.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# Reference packages that parity tests compare against, for the tests only: pinned, installed with
# --no-deps into their own folder (the tests append it to sys.path), so that their old requirements
# (opencv-python, setuptools<81, ...) never enter the project's environment. imagecorruptions needs
# scikit-image and SciPy from here, OpenCV from the dev extra, and setuptools<81 for pkg_resources.
REFERENCES := $(VENV)/references
REFERENCE_STAMP := $(REFERENCES)/.installed
REFERENCE_PINS := imagecorruptions==1.1.2 scikit-image==0.26.0 scipy==1.17.1 lazy_loader==0.6 setuptools==80.9.0

# The browser client's JavaScript dependency (onnxruntime-web), from the committed package-lock.json; `npm ci`
# runs again only when the lock file changes. Without npm the browser tests skip and say why.
NPM_STAMP := node_modules/.cuekit-npm-ci

.PHONY: demo test test-all bench lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[all,dev]' $(TORCH_PINS)
	touch $(STAMP)

$(REFERENCE_STAMP): $(STAMP) Makefile
	rm -rf $(REFERENCES)
	$(PY) -m pip install -q --no-deps --target $(REFERENCES) $(REFERENCE_PINS)
	touch $(REFERENCE_STAMP)

$(NPM_STAMP): package-lock.json package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund --loglevel=error && touch $(NPM_STAMP); \
	else echo "npm not found: onnxruntime-web not installed (the browser page cannot run models; its tests skip)"; fi

demo: $(STAMP)
	$(VENV)/bin/cuekit reproduce --quick --out reports

test: $(STAMP) $(REFERENCE_STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP) $(REFERENCE_STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q

bench: $(STAMP) $(REFERENCE_STAMP) $(NPM_STAMP)
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean-venv:
	rm -rf $(VENV)
