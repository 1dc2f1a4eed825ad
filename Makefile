# gemma-facts — two commands on a fresh machine:
#   make demo   run the local profile end to end (data -> DPO -> eval) on the embedded Gemma 3 270M
#   make test   unit tests + every notebook under nbval in the smoke profile
# Both create .venv and install the pinned CPU stack first (requirements-dev.txt).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NBVAL_OUT ?= $(CURDIR)/.nbval-outputs
# Fake credentials set while the notebooks run; tests/test_secrets_scan.py then proves neither value
# reached any output file or cell output. (Deliberately not shaped like real keys.)
FAKE_GOOGLE_KEY := gf-fake-google-key-5f1c0ffee
FAKE_HF_TOKEN   := gf-fake-hf-token-9d2badcafe

.PHONY: install demo demo-seeds demo-long curve results-seeds results-long test test-unit test-notebooks test-slow bench lint results clean

$(STAMP): requirements-colab.txt requirements.txt requirements-cpu.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	GEMMA_FACTS_PROFILE=local $(VENV)/bin/gemma-facts run

# The headline's spread: the same recipe with three training seeds over one build of the pairs
# (outputs/seeds/seed-<N>/, outputs/seeds/seeds_summary.json); `make results-seeds` records it.
demo-seeds: $(STAMP)
	GEMMA_FACTS_PROFILE=local GEMMA_FACTS_OUTPUT=outputs/seeds $(VENV)/bin/gemma-facts run --seeds 42 7 1234

# The documented longer run: the same pipeline, data, dev choice and evaluation with two epochs
# (148 steps, candidates from step 75; configs/local_long.json), ~37 min on 2 cores.
demo-long: $(STAMP)
	GEMMA_FACTS_PROFILE=local GEMMA_FACTS_OUTPUT=outputs/long $(VENV)/bin/gemma-facts run --config configs/local_long.json

# The measured curve of the longer run: every kept checkpoint on the held-out sets (outputs/long/curve.json).
curve: $(STAMP)
	GEMMA_FACTS_PROFILE=local $(PY) experiments/curve_local.py --run-dir outputs/long

# Copy a finished run into results/ and regenerate the README's headline and docs/RESULTS.md from it.
results: $(STAMP)
	$(PY) -m tools.readme_results --collect local

results-seeds: $(STAMP)
	GEMMA_FACTS_OUTPUT=outputs/seeds $(PY) -m tools.readme_results --collect-seeds local-seeds

results-long: $(STAMP)
	GEMMA_FACTS_OUTPUT=outputs/long $(PY) -m tools.readme_results --collect local-long

test: $(STAMP)
	rm -rf $(NBVAL_OUT)
	GOOGLE_API_KEY=$(FAKE_GOOGLE_KEY) HF_TOKEN=$(FAKE_HF_TOKEN) GEMMA_FACTS_PROFILE=smoke GEMMA_FACTS_OUTPUT=$(NBVAL_OUT) $(PY) -m pytest -m "not slow" tests notebooks \
		--nbval-lax --nbval-current-env -p no:cacheprovider
	GF_SCAN_DIR=$(NBVAL_OUT) GF_SCAN_VALUES="$(FAKE_GOOGLE_KEY) $(FAKE_HF_TOKEN)" \
		$(PY) -m pytest tests/test_secrets_scan.py -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest -m "not slow" tests -p no:cacheprovider

test-notebooks: $(STAMP)
	rm -rf $(NBVAL_OUT)
	GEMMA_FACTS_PROFILE=smoke GEMMA_FACTS_OUTPUT=$(NBVAL_OUT) $(PY) -m pytest notebooks \
		--nbval-lax --nbval-current-env -p no:cacheprovider

test-slow: $(STAMP)
	$(PY) -m pytest -m slow tests -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/run_all.py --profile local

lint: $(STAMP)
	$(PY) -m ruff check helpers tests bench tools experiments

clean:
	rm -rf outputs $(NBVAL_OUT)
