# heaptrace: common tasks.  `make help` lists them.
PYTHON ?= python3

.PHONY: help test test-one sanitize faults fuzz stress build bench clean

help:            ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

test:            ## build and run every test on every CPython 3.11+ found
	scripts/test-all.sh

test-one:        ## build and run every test with $(PYTHON) only
	HEAPTRACE_PYTHONS=$(PYTHON) scripts/test-all.sh

sanitize:        ## build with ASan + UBSan and run every test against it
	PYTHON=$(PYTHON) scripts/sanitize.sh

faults:          ## build with fault injection and run the out-of-memory tests
	PYTHON=$(PYTHON) scripts/test-faults.sh

fuzz:            ## fuzz the snapshot reader for FUZZ_SECONDS (default 90)
	scripts/fuzz-ci.sh $(or $(FUZZ_SECONDS),90)

stress:          ## only the stress tests, against the in-place build
	PYTHONPATH=src $(PYTHON) -m pytest -p no:cacheprovider -m stress tests/stress

build:           ## build the extension in place (for development)
	$(PYTHON) setup.py build_ext --inplace

bench:           ## overhead, memory and snapshot benchmarks beside tracemalloc
	$(PYTHON) bench/overhead.py
	$(PYTHON) bench/memory.py

clean:           ## remove build products and test environments
	rm -rf build .venvs src/heaptrace/*.so src/*.egg-info
