# Two commands from a fresh clone: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch 2.13.0 is a CPU build on disk here (an unpinned torch pulls a multi-GB CUDA build);
# pythia8mc 8.317.2 is a binary wheel (newer ones compile for half an hour).
PINS := torch==2.13.0 pythia8mc==8.317.2
DEMO_DIR ?= demo
DEMO_EVENTS ?= 2000

.PHONY: demo test lint install clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(PINS)
	$(PIP) install -q -e '.[$*]' $(PINS)
	touch $@

install: $(VENV)/.installed-refsim

demo: $(VENV)/.installed-refsim
	$(PY) -m flashsim.demo --out $(DEMO_DIR) --events $(DEMO_EVENTS)

# Slow tests are skipped locally and run in CI (CI=true), or with `make test SLOW=1`.
PYTEST_MARKERS := $(if $(or $(CI),$(SLOW)),,-m "not slow")

test: lint $(VENV)/.installed-test
	$(PY) -m pytest -q $(PYTEST_MARKERS) tests

# ruff (complexity, blind excepts, unused arguments) and mypy on the library, as configured in pyproject.toml
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check flashsim
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache

# Training and held-out samples for the zoo units (see flashsim/recipes/*.toml); about 35 min on 2 cores.
REFSIM := $(VENV)/bin/flashsim refsim --pileup 35 --workers 2
TRAIN_DATA := data/refsim/train_wjets.root data/refsim/train_ttbar.root data/refsim/train_dy.root \
	data/refsim/train_wjets_b.root data/refsim/train_ttbar_b.root
HELDOUT_DATA := data/refsim/test_wjets.root data/refsim/test_ttbar.root data/refsim/test_ttbar_20k.root

# Run-3 (NanoAOD v15 schema) samples for the Run-3 jet units (flashsim/recipes/*_run3.toml)
TRAIN_DATA_RUN3 := data/refsim/train_wjets_v15.root data/refsim/train_ttbar_v15.root
HELDOUT_DATA_RUN3 := data/refsim/test_ttbar_v15.root

.PHONY: training-data training-data-run3
training-data: $(TRAIN_DATA) $(HELDOUT_DATA)
training-data-run3: $(TRAIN_DATA_RUN3) $(HELDOUT_DATA_RUN3)

data/refsim/train_wjets.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process wjets --events 50000 --seed 101 -o $@
data/refsim/train_ttbar.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process ttbar --events 30000 --seed 102 -o $@
data/refsim/train_dy.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process dy --events 10000 --seed 103 -o $@
# a second training half for the muon, jet and MET units (the MET flow overfit the first one alone)
data/refsim/train_wjets_b.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process wjets --events 50000 --seed 104 -o $@
data/refsim/train_ttbar_b.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process ttbar --events 30000 --seed 105 -o $@
data/refsim/test_wjets.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process wjets --events 5000 --seed 201 -o $@
data/refsim/test_ttbar.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process ttbar --events 5000 --seed 202 -o $@
# enough low-pT muons for the efficiency turn-on to be judged at the 0.02 level
data/refsim/test_ttbar_20k.root: | $(VENV)/.installed-refsim
	$(REFSIM) --process ttbar --events 20000 --seed 203 -o $@

data/refsim/train_wjets_v15.root: | $(VENV)/.installed-refsim
	$(REFSIM) --nano-version v15 --process wjets --events 50000 --seed 301 -o $@
data/refsim/train_ttbar_v15.root: | $(VENV)/.installed-refsim
	$(REFSIM) --nano-version v15 --process ttbar --events 30000 --seed 302 -o $@
data/refsim/test_ttbar_v15.root: | $(VENV)/.installed-refsim
	$(REFSIM) --nano-version v15 --process ttbar --events 5000 --seed 303 -o $@

# refsim 2 samples (per-seed pileup pools, electrons and photons; NanoAOD v9, one worker each so that a seed
# gives the same file): the jet, fakejet, fakemuon, met, puppimet and e/gamma units, the 30k held-out ttbar of
# benchmarks/bench_units.py. About 2 h 30 min of one core in all (the 100k pools about 15 min each).
REFSIM2 := $(VENV)/bin/flashsim refsim --pileup 35
TRAIN_DATA_2 := data/refsim2/train_zee.root data/refsim2/train_ttbar.root data/refsim2/train_gjets.root \
	data/refsim2/train_wjets.root data/refsim2/train_minbias.root data/refsim2/train_minbias_pool100k.root \
	data/refsim2/train_minbias_pool100k_b.root data/refsim2/train_ttbar_b.root data/refsim2/train_ttbar_c.root data/refsim2/train_wjets_b.root \
	data/refsim2/train_gjets_b.root data/refsim2/train_zee_b.root
HELDOUT_DATA_2 := data/refsim2/test_zee.root data/refsim2/test_ttbar.root data/refsim2/test_gjets.root \
	data/refsim2/test_ttbar_30k_pool100k.root
.PHONY: training-data-2
training-data-2: $(TRAIN_DATA_2) $(HELDOUT_DATA_2)
data/refsim2/train_zee.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process zee --events 10000 --seed 511 -o $@
data/refsim2/train_ttbar.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process ttbar --events 10000 --seed 512 -o $@
data/refsim2/train_gjets.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process gjets --events 10000 --seed 513 -o $@
# more photons (photon unit) and more electrons (the photons of electron clusters: photon_fromelectron)
data/refsim2/train_gjets_b.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process gjets --events 30000 --seed 641 -o $@
data/refsim2/train_zee_b.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process zee --events 30000 --seed 642 -o $@
data/refsim2/train_wjets.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process wjets --events 10000 --seed 514 -o $@
data/refsim2/train_minbias.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process minbias --events 20000 --seed 515 -o $@
# more jets for the jet unit (each seed its own 5,000-event pool: pool-specific pileup averages out)
data/refsim2/train_ttbar_b.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process ttbar --events 30000 --seed 631 -o $@
data/refsim2/train_ttbar_c.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process ttbar --events 20000 --seed 519 -o $@
data/refsim2/train_wjets_b.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process wjets --events 30000 --seed 518 -o $@
# the same over a 100,000-event min-bias pool (about 15 min for the pool): rare pileup objects (muons) from many events
data/refsim2/train_minbias_pool100k.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process minbias --events 20000 --seed 516 --pileup-pool 100000 -o $@
data/refsim2/train_minbias_pool100k_b.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process minbias --events 20000 --seed 517 --pileup-pool 100000 -o $@
data/refsim2/test_zee.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process zee --events 5000 --seed 611 -o $@
data/refsim2/test_ttbar.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process ttbar --events 5000 --seed 612 -o $@
data/refsim2/test_gjets.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process gjets --events 5000 --seed 613 -o $@
# the 30k held-out ttbar of the README's 30k benchmark, over a 100,000-event pool (rare pileup objects from many events)
data/refsim2/test_ttbar_30k_pool100k.root: | $(VENV)/.installed-refsim
	$(REFSIM2) --process ttbar --events 30000 --seed 632 --pileup-pool 100000 -o $@

# Train the zoo's default units from their recipes (after `make training-data`).
ZOO_UNITS := muon met_genonly
ZOO_UNITS_RUN3 := jet_run3 fakejet_run3
ZOO_UNITS_2 := jet fakemuon fakejet met electron photon electron_fromjet photon_fromjet photon_fromelectron \
	fakeelectron fakephoton electron_fromjet2 electron_fromphoton puppimet
.PHONY: train-units train-units-run3 train-units-2
train-units: training-data
	for unit in $(ZOO_UNITS); do $(VENV)/bin/flashsim train $$unit || exit 1; done
train-units-run3: training-data-run3
	for unit in $(ZOO_UNITS_RUN3); do $(VENV)/bin/flashsim train $$unit || exit 1; done
train-units-2: training-data-2
	for unit in $(ZOO_UNITS_2); do $(VENV)/bin/flashsim train $$unit || exit 1; done
