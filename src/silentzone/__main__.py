"""`python -m silentzone …` is `silentzone …`."""

import sys

from .cli import main

sys.exit(main())
