"""On the PYTHONPATH of the mounts the tests start when GLANCEFS_STRESS=1
(tests/mount_support.py): the stress mode of glancefs.testing.stress there too."""
from glancefs.testing import stress

if stress.wanted():
    stress.apply()
