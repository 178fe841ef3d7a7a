"""Code that runs inside a shard job (the payload image): the shard runner and the live channels.

It imports nothing of the operator side (hpscan.core, backends, engine, controller, cli): only the API models.
"""
