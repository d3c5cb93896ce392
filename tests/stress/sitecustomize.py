"""On the PYTHONPATH of the mounts the tests start when GLANCEFS_STRESS=1
(tests/mount_support.py): the stress mode of glancefs.testing.stress there too."""
import os

if os.environ.get("GLANCEFS_STRESS") == "1":
    from glancefs.testing.stress import apply

    apply()
