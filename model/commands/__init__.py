"""The ``vmmoe`` sub-commands, one module per area (``register(subparsers)``)."""
