"""Subcommands of ``cfcam-fast``, one module each (registered in ``cfcam_fast.cli.COMMANDS``)."""
