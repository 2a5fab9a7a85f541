# podtrace — the README's two commands are `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all test unit crds lint proto demo demo-down deps venv binaries image clean bench

all: test

deps: ## system packages the test tiers need (apt, as root) and the kernel setup
	scripts/install-deps

venv: $(VENV)/.stamp ## Python environment with podtrace and its dev tools
$(VENV)/.stamp: pyproject.toml scripts/make-venv
	scripts/make-venv $(VENV)
	touch $@

binaries: venv ## build (once, cached in ~/.cache/podtrace) kube-apiserver, kubectl, kubelet
	PYTHONPATH=tests $(PY) -m harness.k8s_binaries

image: deps venv ## podtrace/podtrace:<version> from the Dockerfile (a private dockerd where none runs)
	PYTHONPATH=tests $(PY) -m harness.podtrace_image

crds: venv ## regenerate crds/ from the API models
	$(PY) -m podtrace_api.crdgen crds

proto: venv ## regenerate the CRI stubs in agent/podtrace_agent/cri/ from api.proto (grpcio-tools)
	$(PY) -m podtrace_agent.cri.protogen

lint: venv
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
test: deps venv binaries ## every test tier; tiers missing prerequisites skip (fail under PODTRACE_REQUIRE_ALL=1)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing" >&2; exit 1; fi; exit $$rc

unit: venv ## only the pure-logic tier: no root, no cluster
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

NODES ?= 1
demo: deps venv binaries ## a cluster, podtrace, a workload traced: prints tp/ct/nt, Events, seccomp profile (NODES=2: two nodes, podtrace installed in-cluster)
	$(PY) scripts/demo.py up --nodes $(NODES)

# Not part of `make test`: figures, never a pass or fail on time (root; BENCH_QUICK=1: tiny counts).
bench: deps venv binaries ## (root) benchmarks: one table printed, bench/results/latest.json written
	bench/install-deps
	PYTHONPATH=tests $(PY) bench/run.py

demo-down: venv ## tear down everything `make demo` started
	$(PY) scripts/demo.py down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
