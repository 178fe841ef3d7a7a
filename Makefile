# hpscan: `make demo` runs the main job, `make test` runs everything. Both install what they need into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/quickstart

.PHONY: install demo chromium test test-fast test-lanes test-lowest test-py312 test-py313 sim test-real-node lint crds tools s3-build kstatus-build kueue-build cluster cluster-down images condor-build condor condor-down slurm-packages slurm slurm-down clean

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

# Everything: the groups of tests that share no singleton run side by side, each on its own ports (tests/groups.py:
# kubernetes, grid, local and the lanes); a group's whole log is printed when it ends, in .test-logs/ too.
test: $(STAMP) lint chromium slurm-packages tools s3-build kstatus-build kueue-build images condor-build
	$(BIN)/python tests/groups.py

# Debian's Chromium and its chromedriver, for the dashboard's browser tests (tests/integration/kubernetes/test_dashboard.py;
# selenium is told the driver's path, so it downloads nothing). apt-get installs them when missing: 26 packages,
# 22 s from a cold cache; an installed pair costs a dpkg-query.
BROWSER_PACKAGES := chromium chromium-driver
chromium:
	@(for pkg in $(BROWSER_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$pkg 2>/dev/null | grep -q 'install ok installed' || exit 1; done) \
	  || { command -v apt-get >/dev/null || { echo "make: install $(BROWSER_PACKAGES) (Debian's) for the browser tests" >&2; exit 1; }; \
	       sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; echo "installing $(BROWSER_PACKAGES)"; \
	       $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; }

# The drift guard, part of `make test`. $(VENV) resolves fresh: the newest releases, as a new user's install gets.
# Three cheap lanes install every extra (TensorFlow included: the report's unit tests load it) with the unit tests'
# own into venvs of their own, and run the unit and simulation tests:
#   test-lowest  Python 3.11 with `uv pip install --resolution lowest-direct`: every direct requirement at the
#                floor pyproject.toml declares (tests/floors.py fails otherwise), so a floor that no longer works
#                fails here first;
#   test-py312, test-py313  the newest releases, so the newer Pythons run what a new user gets there (TensorFlow
#                has wheels for both). The floors are checked on 3.11 only: on 3.12 and 3.13 lowest-direct lifts
#                those without wheels there (lupa 2.0 on both, scikit-learn 1.4.2 on 3.13).
# uv never downloads a Python here: each lane takes an installed interpreter (PYTHON311, PYTHON312, PYTHON313, or
# one in ~/.pyenv/versions/3.1x.*/bin, or python3.1x on PATH) and stops, naming the one it cannot find.
LANE_EXTRAS := all,test
LANE_TESTS := -q -p no:cacheprovider -m "not integration and not slow" tests/unit tests/simulation
find_python = $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)))),$(shell command -v python$(1)))
PYTHON311 ?= $(call find_python,3.11)
PYTHON312 ?= $(call find_python,3.12)
PYTHON313 ?= $(call find_python,3.13)

# lane VENV PYTHON VERSION RESOLUTION: a new venv on that interpreter with the lane's extras resolved that way.
define lane
	@"$(2)" -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(3)".split("."))))' 2>/dev/null \
	  || { echo "make: no Python $(3) for $(1): set PYTHON$(subst .,,$(3))=/path/to/python$(3) (found: '$(2)')" >&2; exit 1; }
	rm -rf $(1)
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv venv -q --python "$(2)" $(1)
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip install -q --python $(1)/bin/python --resolution $(4) -e '.[$(LANE_EXTRAS)]'
endef

test-lanes: test-lowest test-py312 test-py313

test-lowest: $(STAMP)
	$(call lane,.venv-lowest,$(PYTHON311),3.11,lowest-direct)
	.venv-lowest/bin/python tests/floors.py $(LANE_EXTRAS)
	.venv-lowest/bin/pytest $(LANE_TESTS)

test-py312: $(STAMP)
	$(call lane,.venv-py312,$(PYTHON312),3.12,highest)
	.venv-py312/bin/pytest $(LANE_TESTS)

test-py313: $(STAMP)
	$(call lane,.venv-py313,$(PYTHON313),3.13,highest)
	.venv-py313/bin/pytest $(LANE_TESTS)

# The control loop under faults (tests/simulation): SEEDS random schedules of the deterministic simulation on
# every core; `make test` runs 2,000 of them. A failure prints its reproduction line.
SEEDS ?= 20000
sim: $(STAMP)
	$(BIN)/python -m hpscan.testing.sim --seeds 0:$(SEEDS)

# Regenerate the committed CRD (and the Helm chart's copy) from the pydantic models (tests fail when they drift).
crds: $(STAMP)
	$(BIN)/hpscan crd > crds/hpscan.io_hpscans.yaml
	$(BIN)/python tests/unit/project/test_chart_files.py --write  # the chart's CRD copy and its site schema

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

# Kueue's controller manager for the GPU-quota tests (cluster/kueue: sigs.k8s.io/kueue from the Go module proxy; its
# CRDs and webhooks are read from the module's source in the Go module cache), cached by version in the same cache:
# the first build took 11 min 12 s on 2 cores shared with other builds (Go build cache warm with Kubernetes
# libraries, Kueue's other modules downloaded then), a cached one a link.
kueue-build:
	cluster/kueue/build.sh >/dev/null

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

# A Slurm test cluster from Debian's packages (docs/slurm.md): munged, slurmctld, two slurmd (a GPU node with two
# stand-in GPUs as gres/gpu, a CPU node) and slurmrestd with JWT, on 127.0.0.1, state in .slurm/. Nothing to build:
# apt-get installs the packages when missing (a dpkg-query when installed); the cluster starts in about a second.
SLURM_PACKAGES := slurmctld slurmd slurmrestd slurm-client slurm-wlm-jwt-plugin munge
slurm-packages:
	@(for pkg in $(SLURM_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$pkg 2>/dev/null | grep -q 'install ok installed' || exit 1; done) \
	  || { command -v apt-get >/dev/null || { echo "make: install $(SLURM_PACKAGES) (Debian's) for the Slurm tests" >&2; exit 1; }; \
	       sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; echo "installing $(SLURM_PACKAGES)"; \
	       $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES) >/dev/null; }

slurm: slurm-packages
	cluster/slurm/up.sh

# --purge as well: the state folder and the job user up.sh created go, so the host is as before.
slurm-down:
	cluster/slurm/down.sh --purge

clean:
	rm -rf $(VENV) .venv-lowest .venv-py312 .venv-py313 .pytest_cache .mypy_cache .ruff_cache runs
