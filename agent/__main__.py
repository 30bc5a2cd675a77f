"""``python -m agent`` is ``rotor-agent``."""

import sys

from agent.cli import main

sys.exit(main())
