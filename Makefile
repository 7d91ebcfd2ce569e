# Every target installs what is missing (apt packages, the Caffe build, the venv) through
# docker/build_caffe.sh, which skips each step that is already done.
VENV        ?= .venv
PY          := $(VENV)/bin/python
CAFFE_FLAGS ?=
PYTEST_ARGS ?=
DEMO_ARGS   ?=

.PHONY: help setup test demo prototxt bench clean

help:
	@echo "make demo      run the main job (synthetic benchmark: train, fixations, Table 3.1 in small)"
	@echo "make test      run the test suite (real Caffe; builds it on first use)"
	@echo "make setup     install Debian packages, build Caffe, create $(VENV)"
	@echo "make prototxt  regenerate prototxt/ from tools/netdef.py and tools/zoo_nets.py"
	@echo "make bench     run the benchmark scripts (speed ratios measured in one run)"
	@echo "make clean     remove the venv and the Caffe build"

setup:
	bash docker/build_caffe.sh --venv $(VENV) $(CAFFE_FLAGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

prototxt: setup
	$(PY) tools/make_prototxt.py

bench: setup
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build
