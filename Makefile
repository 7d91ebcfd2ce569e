# Every target installs what is missing (apt packages, the Caffe build, the venv) through
# docker/build_caffe.sh, which skips each step that is already done.
VENV        ?= .venv
PY          := $(VENV)/bin/python
CAFFE_FLAGS ?=
PYTEST_ARGS ?=
DEMO_ARGS   ?=
# The CUDA compile check (`make cuda-check`; `make test` runs it after the tests when CI=true,
# as on the project's CI) and the GPU bundle: Caffe for compute capability
# 9.0 (H100/H200) with CUDA 13.0 from PyPI, with Caffe's own test binary, built into
# $(CACHE_DIR) under the recipe's hash (docker/build_caffe.sh --cached): a machine that
# built this recipe once finds it there and pays nothing.
CACHE_DIR   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pixelfeedback
CUDA_ARCH   ?= 90
CUDA_JOBS   ?= $(shell nproc)
CUDA_BUILD  = PIXELFEEDBACK_CACHE="$(CACHE_DIR)" bash docker/build_caffe.sh
CUDA_OPTS   = --cuda --cuda-arch "$(CUDA_ARCH)" --with-tests --cached --python $(abspath $(PY)) --venv none
GPU_BUNDLE  ?= build/pixelfeedback-gpu.tar.xz
# What the bundle is made of (besides the CUDA Caffe): repacked only when one changes.
GPU_BUNDLE_INPUTS := docker/make_gpu_bundle.sh docker/gpu_check.sh tools/gpu_check.py requirements.txt \
    $(shell find docker/gpu_bundle pixelfeedback python_layers -name '*.py' 2>/dev/null)

.PHONY: help setup test cuda-check cuda-build cuda-prefix gpu-bundle demo table31-small table31-hard prototxt bench slurm-check docker-check clean

help:
	@echo "make demo      run the main job (synthetic benchmark: train, fixations, Table 3.1 in small)"
	@echo "make table31-small  the powered Table 3.1 in small (about 75 min on 2 cores; resumes): runs/table31-small/report.md"
	@echo "make table31-hard  the harder tier: Table 3.1's four losses at lambda 0.01, 0.1, 1 on harder data (baseline 0.671, the thesis 0.6225; estimated 33-49 min on 2 cores; resumes): runs/table31-hard/report.md"
	@echo "make test      run the test suite (real Caffe; builds it on first use); with CI=true also make cuda-check"
	@echo "make cuda-check  compile the CUDA 13 Caffe (cached), pack the GPU bundle and run their tests (about 25 min cold)"
	@echo "make setup     install Debian packages, build Caffe, create $(VENV)"
	@echo "make cuda-build  compile (or find in $(CACHE_DIR)) the CUDA 13 Caffe for sm_$(CUDA_ARCH); make cuda-check runs it"
	@echo "make gpu-bundle  pack it, its libraries, Python and the GPU check into $(GPU_BUNDLE) (<= 45 MiB)"
	@echo "make prototxt  regenerate prototxt/ with tools/make_prototxt.py (the nets of pixelfeedback/nets/)"
	@echo "make bench     run the benchmark scripts (speed ratios measured in one run)"
	@echo "make slurm-check  docker/slurm_table31.sh on a single-node Slurm of its own (root; not CI; about a minute)"
	@echo "make docker-check  build the CPU image and run test, demo, fixations, reproduce in it (podman if no Docker; not CI; about 12 min cold on 2 cores); CUDA=1 also the CUDA image (about 13 min more)"
	@echo "make clean     remove the venv and the Caffe build"

setup:
	bash docker/build_caffe.sh --venv $(VENV) $(CAFFE_FLAGS)

# The tests a newcomer runs need no CUDA build; CI (CI=true) goes on to the CUDA check.
test: setup
	$(PY) -m pytest -m "not cuda_build" $(PYTEST_ARGS)
ifeq ($(CI),true)
	@$(MAKE) --no-print-directory cuda-check
endif

cuda-check: cuda-build gpu-bundle
	$(PY) -m pytest -m cuda_build $(PYTEST_ARGS)

# Fails unless CMake found CUDA and libcaffe.so links libcudart (build_caffe.sh checks).
cuda-build: setup
	$(CUDA_BUILD) build $(CUDA_OPTS) --jobs $(CUDA_JOBS)
	$(CUDA_BUILD) check $(CUDA_OPTS)

cuda-prefix:
	@$(CUDA_BUILD) prefix $(CUDA_OPTS)

gpu-bundle: cuda-build
	@$(MAKE) --no-print-directory $(GPU_BUNDLE) CUDA_PREFIX="$$($(CUDA_BUILD) prefix $(CUDA_OPTS))"

ifdef CUDA_PREFIX
$(GPU_BUNDLE): $(CUDA_PREFIX)/.build-stamp $(GPU_BUNDLE_INPUTS)
	bash docker/make_gpu_bundle.sh --prefix "$(CUDA_PREFIX)" --python $(PY) --out $@
endif

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

table31-small: setup
	$(PY) tools/demo.py --table31-small $(DEMO_ARGS)

table31-hard: setup
	$(PY) tools/demo.py --table31-hard $(DEMO_ARGS)

prototxt: setup
	$(PY) tools/make_prototxt.py

bench: setup
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# Not part of CI: installs slurm-wlm and munge, starts and stops its own daemons.
slurm-check:
	bash docker/slurm_check.sh

# Not part of CI: installs podman where no Docker engine answers; CUDA=1 also builds the CUDA
# image for CUDA_ARCH (one architecture) and runs it.
docker-check:
	CUDA="$(CUDA)" CUDA_ARCH="$(CUDA_ARCH)" bash docker/docker_check.sh

clean:
	rm -rf $(VENV) build
