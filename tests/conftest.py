"""The test tree, foldered by what it tests:

- tests/unit/<package>/: pure functions and thin shells of one package (api, core, controller, backends/<kind>, job,
  cli, report, dashboard, dl1) and the project's own rules (project/: layers, dependencies, chart files, benches);
  `make test-fast` runs them with the simulation in seconds;
- tests/simulation/: the control loop under faults, deterministic (docs/simulation.md);
- tests/integration/<group>/: real parts, one folder per group that shares a singleton: kubernetes (the control
  plane, the real node), htcondor (a personal pool), slurm (a Slurm cluster), backends (the contract suite on every
  backend), store (the S3 server), local (TensorFlow and `hpscan run` on this machine). `make test` runs the groups
  side by side, each with its own ports and state folders (tests/groups.py);
- tests/support/: what they share, imported as ``support.<module>``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so that `support` is importable from every folder

try:
    from hypothesis import settings
except ImportError:  # the lanes without the test extra do not run the property tests
    pass
else:
    # No deadline on any property test: `make test` runs its groups side by side on 2 cores, where an example may
    # wait for the CPU; timing is for bench/, never for a test (a slow example still fails on its own assertions).
    settings.register_profile("hpscan", deadline=None)
    settings.load_profile("hpscan")
