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

.PHONY: install demo demo-long demo-early-stop curve results-long test test-unit test-notebooks test-slow bench lint results clean

$(STAMP): requirements-colab.txt requirements.txt requirements-cpu.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	GEMMA_FACTS_PROFILE=local $(PY) -m helpers.pipeline

# The documented longer run: the same pipeline, data, dev choice and evaluation with two epochs
# (148 steps, candidates from step 75; configs/local_long.json), ~37 min on 2 cores.
demo-long: $(STAMP)
	GEMMA_FACTS_PROFILE=local GEMMA_FACTS_OUTPUT=outputs/long $(PY) -m helpers.pipeline --train-config configs/local_long.json

# The measured curve of the longer run: every kept checkpoint on the held-out sets (outputs/long/curve.json).
curve: $(STAMP)
	GEMMA_FACTS_PROFILE=local $(PY) bench/curve_local.py --run-dir outputs/long

# The first early-stopping measurement, before the dev choice was a pipeline stage (~42 min on 2 cores):
# train the long recipe without 8 dev documents, score every
# kept checkpoint on them, keep the one a fixed rule picks, then read the held-out sets
# (results/tuning.jsonl + results/dev_early_stopping.json; `python -m helpers.readme_results` renders them).
EARLY_STOP_TRAIN = {"max_train_pairs": null, "max_steps": -1, "num_train_epochs": 2.0, "eval_steps": 50, "save_steps": 25, "save_total_limit": 10}
demo-early-stop: $(STAMP)
	GEMMA_FACTS_PROFILE=local $(PY) -m helpers.data build
	GEMMA_FACTS_PROFILE=local $(PY) bench/tune_local.py --name early_stop --train '$(EARLY_STOP_TRAIN)' --curve
	GEMMA_FACTS_PROFILE=local $(PY) bench/dev_early_stopping.py --tune-name early_stop
	$(PY) -m helpers.readme_results

# Copy a finished run into results/ and regenerate the README's results section from it.
results: $(STAMP)
	$(PY) -m helpers.readme_results --collect local

results-long: $(STAMP)
	GEMMA_FACTS_OUTPUT=outputs/long $(PY) -m helpers.readme_results --collect local-long

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
	$(PY) -m ruff check helpers tests bench

clean:
	rm -rf outputs $(NBVAL_OUT)
