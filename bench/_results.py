"""Where a benchmark writes its report: a name not yet taken.

Reports are named by host and date, and results/ holds committed ones: a second run the same
day used to overwrite the first, losing a result the docs cite. The second run now gets
`-b`, the third `-c`, and so on, the naming bench/results/ already follows by hand.
"""

from __future__ import annotations

import string
from pathlib import Path


def unused(path: Path) -> Path:
    """`path` if nothing is there yet, else the first free sibling with `-b`, `-c`, … added."""
    if not path.exists():
        return path
    for letter in string.ascii_lowercase[1:]:
        candidate = path.with_name(f"{path.stem}-{letter}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"{path} and all its -b … -z siblings exist; pass --out")
