"""`python -m tora_model …`: see tora_model/cli.py."""

import sys

from .cli import main

sys.exit(main())
