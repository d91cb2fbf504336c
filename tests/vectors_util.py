"""Read the fixed test vectors in tests/vectors/ (published for other implementations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors"


def load_vectors(name: str) -> Any:
    """The parsed JSON of ``tests/vectors/<name>.json``."""
    with open(VECTORS / f"{name}.json", encoding="utf-8") as handle:
        return json.load(handle)
