# hpscan: `make demo` runs the main job, `make test` runs everything. Both install what they need into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/quickstart

.PHONY: install demo test test-fast sim test-real-node lint crds tools s3-build kstatus-build cluster cluster-down images condor-build condor condor-down clean

install: $(STAMP)

# Re-install whenever pyproject.toml changes; uv makes a warm re-install take seconds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[all,dev]'
	touch $(STAMP)

# The quickstart scan end to end on this CPU (about two minutes on 2 cores), with the paper's plots.
# Running it again resumes: finished combinations are never trained twice, the report's numbers come from its
# cache (RUN/cache/): about ten seconds.
demo: $(STAMP)
	$(BIN)/hpscan run examples/quickstart.yaml --out $(DEMO_OUT) --report

lint: $(STAMP)
	$(BIN)/ruff check operator payload tests bench cluster
	$(BIN)/ruff format --check operator payload tests bench cluster
	$(BIN)/mypy operator/hpscan payload/dl1
	$(BIN)/lint-imports  # the layers in pyproject.toml [tool.importlinter]
	$(BIN)/hadolint payload/Dockerfile operator/Dockerfile

# The fast part: pure functions, seconds.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not integration and not slow" tests

test: $(STAMP) lint tools s3-build kstatus-build images condor-build
	$(BIN)/pytest -q --durations=25 tests

# The control loop under faults (tests/simulation): SEEDS random schedules of the deterministic simulation on
# every core; `make test` runs 2,000 of them. A failure prints its reproduction line.
SEEDS ?= 20000
sim: $(STAMP)
	$(BIN)/python -m hpscan.testing.sim --seeds 0:$(SEEDS)

# Regenerate the committed CRD (and the Helm chart's copy) from the pydantic models (tests fail when they drift).
crds: $(STAMP)
	$(BIN)/hpscan crd > crds/hpscan.io_hpscans.yaml
	$(BIN)/python tests/unit/test_chart_files.py --write  # the chart's CRD copy and its site schema

# The local Kubernetes control plane (cluster/README.md). Go builds are cached by version in
# ${HPSCAN_TOOLS_CACHE:-~/.cache/hpscan-tools}: the first run takes minutes, later runs seconds.
tools:
	cluster/build-tools.sh

# The S3 server of the model-store tests (versitygw, from the Go module proxy; cluster/s3/build.sh), cached by
# version in the same cache: a cold build takes about 2.5 minutes on 2 cores, a cached one a link.
s3-build:
	cluster/s3/build.sh >/dev/null

# The checkers of the tests that judge an HPScan as GitOps tools do (cluster/kstatus: sigs.k8s.io/cli-utils' kstatus,
# what Flux and Helm 4 use, and Flux's own healthCheckExprs evaluator), cached by the content of their go.mod, go.sum
# and main.go in the same cache: both from empty Go caches took 4.5 minutes on 2 cores busy with a CI run (kstatus
# alone 1-2.5 minutes), a cached run 0.2 s.
kstatus-build:
	cluster/kstatus/build.sh >/dev/null

cluster: tools $(STAMP)
	cluster/up.sh

cluster-down:
	cluster/down.sh

# The payload, gpu-check and operator images with buildah from their Dockerfiles, on bases made here
# (cluster/README.md). Keyed by content: the first run takes minutes, a warm run seconds.
images:
	cluster/images/build.sh

# Only the tests on the real node (containerd + kubelet + kube-proxy, cluster/node/; needs root), which `make test`
# runs too. The node is stopped afterwards and the host restored, unless it was already up.
test-real-node: $(STAMP) images
	$(BIN)/pytest -q -m real_node tests/integration

# A personal HTCondor pool with two simulated GPUs (docs/htcondor.md). The daemons are built from source once per
# version into ${HPSCAN_CONDOR_CACHE:-~/.cache/hpscan-condor}: about 20 minutes on 2 cores, later runs a second.
condor-build:
	cluster/condor/build.sh >/dev/null

condor: condor-build
	cluster/condor/up.sh

condor-down:
	cluster/condor/down.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs
