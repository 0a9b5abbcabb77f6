"""Command-line tools: ``cli`` (``python -m keycafe``: run a node, or dispatch to
``status`` and ``launch``), ``status`` and ``launcher``. Imported by name, so
``status`` does not load the node."""
