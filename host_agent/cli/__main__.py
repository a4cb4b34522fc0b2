"""`python -m host_agent.cli …` is `bodycam …`."""

import sys

from host_agent.cli import main

sys.exit(main())
