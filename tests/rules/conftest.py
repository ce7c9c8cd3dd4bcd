"""Rule tests: numba's on-disk cache goes to the repo's .cache (as with ``make test``)."""

from __future__ import annotations

import os
from pathlib import Path

# numba reads NUMBA_CACHE_DIR when first imported; the rules package imports it.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).parents[2] / ".cache" / "numba"))
