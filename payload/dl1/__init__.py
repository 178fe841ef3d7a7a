"""dl1: hpscan's reference payload, a DL1-style b-tagging network trained per combination of a shard file.

Modules: ``synthetic`` (realistic jets in the dumper layout), ``data`` (``load_dataset``: files or synthetic ->
scaled, weighted train/validation/test splits), ``model`` (``parse_combination``, ``MLP``), ``train``
(``parse_settings``, ``train_many``, ``train_combination``), ``metrics`` (``tagging_metrics``), ``gpucheck``
(``check`` with injectable probes), ``cli`` (the ``dl1`` command). TensorFlow is imported only where needed.
"""
