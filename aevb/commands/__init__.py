"""Sub-commands of the `aevb` command line, one module each."""
