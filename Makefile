# One command sets up and runs each job: `make run`, `make test`.
# CPU machines: torch is pinned to the CPU wheel. GPU users override, e.g.
#   make run TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
PYTHON      ?= python3.11
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PY          := $(VENV)/bin/python
SHELL       := /bin/bash
# pip on some machines warns about missing local index folders: keep the log readable.
QUIET_PIP   := 2>&1 | { grep -v "is ignored" || true; }
STAMP       := $(VENV)/.installed

# The offline and Prefect environment defaults: infra/environment.py, applied by each entry point.

.PHONY: setup run test lint clean bootstrap bootstrap-judge bootstrap-reader bootstrap-claims stages bench bench-quick browser

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PY) -m pip install -q --upgrade pip $(QUIET_PIP)
	set -o pipefail; $(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)" $(QUIET_PIP)
	set -o pipefail; $(PY) -m pip install -q -e ".[dev]" $(QUIET_PIP)
	touch $(STAMP)

setup: $(STAMP)

# the SRC pipeline on the built-in world: rationale SFT, R-Scorer, 1 iteration (iterate.iterations), per-iteration table
run: $(STAMP)
	$(VENV)/bin/src run --config configs/builtin.yaml

# headless Chromium + chromedriver (Debian packages) for the browser test; no-op when present
browser:
	bash scripts/install_browser.sh

# the whole suite, slow integration tests included (plain `pytest` skips `slow` and `gpu`),
# on 2 workers (a module stays on one worker; TEST_WORKERS=0 runs it in one process)
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -q -m "not gpu" -n $(TEST_WORKERS) --dist loadgroup --durations=25

# every stage once as plain function calls (no Prefect): the library end to end
stages: $(STAMP)
	$(PY) scripts/run_stages.py --config configs/builtin.yaml

# efficacy table with ablations, seeds 0-2 + performance benchmarks -> bench/results/ (~62 min on 2 cores)
bench: $(STAMP)
	$(PY) -m bench.run

# the same figures at small budgets (~10 min; not comparable with the full table)
bench-quick: $(STAMP)
	$(PY) -m bench.run --quick

lint: $(STAMP)
	$(PY) -m ruff check .

bootstrap: $(STAMP)
	$(PY) -m tools.bootstrap --config configs/builtin.yaml

# the committed tiny R-Scorers (models/builtin/judge, judge-pointwise): ~80 min on 2 cores.
# Phase 1 from scratch; phase 2 adds 3,000 colour-question records (phase 1 left that family
# at chance); phases 3-4 add flaw-vs-flaw pairs (misled vs unreasonable was the weakest pair).
# The pointwise ablation's judge is phase 3 + 600 steps on pointwise items too.
JUDGE_TMP ?= /tmp/src-judge
JB := $(PY) -m tools.judge_bootstrap --config configs/builtin.yaml --n-heldout 300
bootstrap-judge: $(STAMP)
	$(JB) scorer.train_steps=2000 scorer.learning_rate=3e-3 --eval-every 500 --out $(JUDGE_TMP)/phase1
	$(JB) scorer.train_steps=2000 scorer.learning_rate=2e-3 --init $(JUDGE_TMP)/phase1 \
	    --focus color_of:3000 --eval-every 500 --out $(JUDGE_TMP)/phase2
	$(JB) scorer.train_steps=1500 scorer.learning_rate=1.5e-3 --init $(JUDGE_TMP)/phase2 \
	    --focus color_of:3000 --flaw-pairs 6 --eval-every 500 --out $(JUDGE_TMP)/phase3
	$(JB) scorer.train_steps=800 scorer.learning_rate=1e-3 --init $(JUDGE_TMP)/phase3 \
	    --focus color_of:3000 --flaw-pairs 6 --out models/builtin/judge
	$(JB) scorer.mode=pointwise scorer.train_steps=600 scorer.learning_rate=2e-3 \
	    --init $(JUDGE_TMP)/phase3 --flaw-pairs 6 --out models/builtin/judge-pointwise

# the committed reader (models/builtin/reader): ~40 min on one core, from the committed judge in
# two phases (4,000 steps at lr 2e-3, then 4,000 more at 1e-3: docs/reader.md),
# with the candidates of a stage-1 adapter (ADAPTER: `make run`'s, .src/stages/rationale_sft/<key>/adapter)
READER_TMP ?= /tmp/src-reader
bootstrap-reader: $(STAMP)
	test -n "$(ADAPTER)" || { echo "set ADAPTER=<a stage-1 adapter folder>"; exit 2; }
	$(PY) -m tools.reader_bootstrap --config configs/builtin.yaml --edits 4 --steps 4000 \
	    --onpolicy $(ADAPTER) --onpolicy-cache $(READER_TMP) --out $(READER_TMP)/phase1
	$(PY) -m tools.reader_bootstrap --config configs/builtin.yaml --edits 4 --steps 4000 --lr 1e-3 \
	    --init $(READER_TMP)/phase1 --onpolicy $(ADAPTER) --onpolicy-cache $(READER_TMP) \
	    --out models/builtin/reader

# the committed claim checker of the claims judge (models/builtin/claims): from the committed
# judge's weights, on (true, false) claim pairs of 4,000 scorer-split scenes; ~7 min on one core
bootstrap-claims: $(STAMP)
	$(PY) -m tools.claims_bootstrap --config configs/builtin.yaml --steps 3000 --lr 2e-3 \
	    --out models/builtin/claims

clean:
	rm -rf $(VENV) .src
