"""Where the team's published contracts for tests are: `shared/schemas/` (KServe's CRD, the V2 REST spec).

They are not copied into the repository (they are other projects' files). The directory sits beside the
checkout (`../shared`), but a fresh clone elsewhere (CI clones into a temporary directory) has no such
sibling, so the search also walks up from the checkout and ends at the workspace's own copy.
LEPTON_SHARED_SCHEMAS names the directory explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_COPY = Path("/work/shared/schemas")


def shared_schema(name: str) -> Path | None:
    """The file `name` from the shared schemas, or None if no copy is found."""
    candidates = []
    if os.environ.get("LEPTON_SHARED_SCHEMAS"):
        candidates.append(Path(os.environ["LEPTON_SHARED_SCHEMAS"]))
    candidates += [base / "shared" / "schemas" for base in (ROOT, *ROOT.parents)]
    candidates.append(WORKSPACE_COPY)
    for directory in candidates:
        if (directory / name).is_file():
            return directory / name
    return None
