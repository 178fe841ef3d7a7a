"""The Kubernetes operator: kopf handlers (handlers.py) around a reconcile step (reconcile.py) that calls the
pure planner, aggregator and decisions. Run it with `hpscan operator`."""
