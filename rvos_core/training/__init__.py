"""Training: datasets → Hungarian matching + losses → train loop (used by the ``train`` subcommand)."""
