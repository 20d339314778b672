"""Click commands of the later stages, one module each; :mod:`lsync.cli` registers them on the group.

Modules here import only click and :mod:`lsync.cli_options` at import time (heavy libraries inside the
command functions), so ``lsync --help`` stays instant.
"""
