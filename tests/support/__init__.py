"""What the tests share, imported as ``support.<module>`` (tests/conftest.py puts tests/ on sys.path):

- ``backend_contract``: the backend contract suite, collected by tests/unit/backends and tests/integration/backends;
- ``payloads/contract_payload.py`` (``CONTRACT_PAYLOAD``): a payload that honours the contract without TensorFlow;
- ``report_runs``, ``dashboard_runs``: fake run folders for the report and the dashboard;
- ``run_observers``: quiet observers for ``hpscan run`` in tests;
- ``checkpoint_files``: reading dl1's checkpoint epochs; ``rung_pruning``: a TPE + ASHA scan of sub-second epochs;
- ``real_node``: the tolerations that reach the real node, containerd's client on its socket, a scan's end;
- ``condor_pool``, ``slurm_cluster``, ``operator_support``: the integration fixtures (a personal HTCondor pool, the
  Slurm test cluster, the operator process and its scans), registered as plugins by tests/integration/conftest.py.
"""

from pathlib import Path

CONTRACT_PAYLOAD = Path(__file__).resolve().parent / "payloads" / "contract_payload.py"
