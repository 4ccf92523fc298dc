import os
import signal
import sys

from ablations.cli import _terminate, main

signal.signal(signal.SIGTERM, _terminate)  # SIGTERM shuts down as Ctrl-C does, then exits 143 with one line
try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:  # e.g. `python -m ablations show <id> | head`: the reader left; no traceback
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 0
raise SystemExit(code)
