import os
import sys

from .main import main

status = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A torchrun worker: the process group is already destroyed, every file is written and
    # closed. Skip interpreter finalisation, where gloo's C++ threads can still hold tensors
    # that need the GIL and abort the process ("terminate called without an active
    # exception") after a successful run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
raise SystemExit(status)
