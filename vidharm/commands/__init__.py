"""The ``vidharm`` commands, one module per command or family of commands; what they share
(pipeline options, config from flags, checks before any work, the batch report, the process
settings of commands that process frames) is in :mod:`vidharm.commands.common`.
:mod:`vidharm.cli` only defines the group and attaches them."""
