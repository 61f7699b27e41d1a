from __future__ import annotations

import sys

from deid.cli import main

sys.exit(main())
