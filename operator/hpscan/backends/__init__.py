"""Where shards run. One interface (base.Backend), one module per batch system: local, kubernetes, htcondor."""
