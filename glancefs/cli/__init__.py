"""Command-line front ends: ``glancefs`` (main.py) and ``mount.glancefs`` (mount_helper.py)."""
