"""What a credential's worker process costs a poll (docs/security.md, "HTCondor IDTOKENs per namespace").

On the personal HTCondor pool (cluster/condor/up.sh; started when it is not up, left running), submits a 10-shard
scan twice to the same access point: once from a site without a tokenSecret (the operator's own identity, calls in
this process) and once from a site whose Secret holds an IDTOKEN the pool issued (calls through that credential's
worker process). The jobs require a machine that does not exist, so they stay idle and the pool stays quiet. Then it
times ROUNDS poll cycles of each (``poll`` + ``fetch_records`` with a fresh schedd query each, as the operator's
step does), and each first submit (the worker's includes its start: spawn, bindings, authentication).

    .venv/bin/python bench/condor_credentials.py
    # last line: poll_ms_in_process=<median> poll_ms_worker=<median> overhead_ms=<median difference>
    #            submit_s_in_process=<s> submit_s_worker=<s>
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONDOR_DIR = Path(os.environ.get("HPSCAN_CONDOR_DIR", REPO / ".condor")).resolve()
SHARDS = 10
ROUNDS = 100


def pool() -> tuple[str, str]:
    """Start the pool if needed; its collector address and the submitting user's identity."""
    subprocess.run([str(REPO / "cluster" / "condor" / "up.sh")], check=True, capture_output=True)
    settings = dict(line.split("=", 1) for line in (CONDOR_DIR / "pool.env").read_text().split())
    os.environ["CONDOR_CONFIG"] = str(CONDOR_DIR / "condor_config")
    return f"127.0.0.1:{settings['COLLECTOR_PORT']}", f"{settings['SUBMIT_USER']}@hpscan.test"


def main() -> None:
    collector, identity = pool()
    import htcondor2

    from hpscan.api.spec import HPScanSpec
    from hpscan.backends.base import ScanRef, ShardLaunch
    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.core.planning import plan

    token = subprocess.run(
        [str(CONDOR_DIR / "release" / "bin" / "condor_token_create"), "-identity", identity, "-lifetime", "3600"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    schedd = str(htcondor2.Collector(collector).locate(htcondor2.DaemonType.Schedd)["Name"])
    block = {"pool": collector, "schedd": schedd, "universe": "vanilla", "executable": "/bin/true"}
    block |= {"requirements": 'Machine == "no-such-machine"', "requestMemory": "64MB", "requestDisk": "1MB"}

    def spec(**extra: object) -> HPScanSpec:
        return HPScanSpec.model_validate(
            {
                "parameters": [{"name": "x", "values": list(range(SHARDS * 8))}],
                "sharding": {"shards": SHARDS},
                "gpu": {"count": 0, "required": False},
                "payload": {"image": "unused"},
                "sites": [{"name": "pool", "htcondor": {**block, **extra}}],
            }
        )

    with tempfile.TemporaryDirectory(prefix="bench-credentials-", dir=CONDOR_DIR / "jobs") as work:
        backend = HTCondorBackend(Path(work), read_secret=lambda *key: token, max_age_seconds=0)
        cases = {"in_process": spec(), "worker": spec(tokenSecret={"name": "grid-token"})}
        scans = {case: ScanRef("bench", "bench", f"bench-{case}-{uuid.uuid4().hex[:8]}") for case in cases}
        timings: dict[str, list[float]] = {case: [] for case in cases}
        submit_s: dict[str, float] = {}
        try:
            for case, scan_spec in cases.items():
                planned = plan("bench", scan_spec)
                start = time.perf_counter()
                backend.prepare(scans[case], scan_spec, SHARDS)
                backend.submit(
                    scans[case], scan_spec, [ShardLaunch(f, scan_spec.sites[0]) for f in planned.shard_files()]
                )
                submit_s[case] = time.perf_counter() - start  # the worker's includes its start
            for case, scan in scans.items():
                states = backend.poll(scan)
                assert len(states) == SHARDS, (case, states)
            for _ in range(ROUNDS):
                for case, scan in scans.items():
                    began = time.perf_counter()
                    backend.poll(scan)
                    backend.fetch_records(scan)
                    timings[case].append(time.perf_counter() - began)
        finally:
            for scan in scans.values():
                backend.forget(scan, delete_sandboxes=True)
            backend.close()
    median = {case: statistics.median(values) * 1000 for case, values in timings.items()}
    overhead = statistics.median(w - i for w, i in zip(timings["worker"], timings["in_process"], strict=True)) * 1000
    print(
        f"{SHARDS} shards, {ROUNDS} poll cycles each, medians; p95 in-process "
        f"{sorted(timings['in_process'])[int(ROUNDS * 0.95)] * 1000:.1f} ms, worker "
        f"{sorted(timings['worker'])[int(ROUNDS * 0.95)] * 1000:.1f} ms"
    )
    print(
        f"poll_ms_in_process={median['in_process']:.1f} poll_ms_worker={median['worker']:.1f} "
        f"overhead_ms={overhead:.1f} submit_s_in_process={submit_s['in_process']:.2f} "
        f"submit_s_worker={submit_s['worker']:.2f}"
    )


if __name__ == "__main__":  # the worker processes are spawned: this module must import without running
    main()
