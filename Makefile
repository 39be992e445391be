# `make run`: set up and launch Tailor (the headless demo where there is no display).
# `make test`: set up and run the whole test suite (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test bench clean

setup: $(VENV)/.installed $(VENV)/llama-vocabs/VERSION

# PYTHONWARNINGS: setuptools prints an 'Editable installation' notice (not a problem) in the
# middle of every editable install; only that message is ignored, so a real deprecation of our
# packaging metadata would still show (tests/test_packaging.py checks for one).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77'
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# llama.cpp's tokenizer test vocabularies (ggml-vocab-*.gguf with .inp/.out), from the sdist of
# the llama-cpp-python just installed; the conformance tests read them here, offline.
$(VENV)/llama-vocabs/VERSION: $(VENV)/.installed scripts/fetch_llama_vocabs.py
	$(BIN)/python scripts/fetch_llama_vocabs.py $(VENV)/llama-vocabs

run: setup
	$(BIN)/tailor

test: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/lint-imports --no-cache
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) test-output
