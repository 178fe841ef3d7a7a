"""One step of a scan, the same for `hpscan run` and the operator, as a pipeline (hpscan.engine.pipeline.step):

1. poll and fold (poll.py): each backend's shard states, records and per-epoch reports; records folded into the
   aggregate; a shard on a site that does not answer stays where the last status put it;
2. sites and probes (sites.py): each site's next state, probing those that need it (through a cache scans share);
3. decide (hpscan.core.decisions.decide, pure): which shards start where, stop, move or wait;
4. act (act.py): stop and withdraw, then start; each shard's work comes from a Launcher: its planned shard file,
   or, for workers that pull, trials handed out (pull.py, behind the ask/tell surface of hpscan.core.search);
   running workers are topped up after the starts;
5. status (hpscan.core.summary.build_status), with the sites an action failed on; a scan that ended stops what
   still runs.

The two shells around it differ only in where state lives between steps: `hpscan.local_scan` keeps it in the
run folder and loops every EngineSettings.poll_seconds; `hpscan.controller` keeps it in the HPScan's status and
kopf's memo and runs one step per timer tick. Each gives its options once, as an EngineSettings.
"""

from hpscan.engine.act import remaining_shard_file
from hpscan.engine.pipeline import StepInput, StepResult, step
from hpscan.engine.settings import EngineSettings
from hpscan.engine.sites import ProbeCache, probe_key

__all__ = ["EngineSettings", "ProbeCache", "StepInput", "StepResult", "probe_key", "remaining_shard_file", "step"]
