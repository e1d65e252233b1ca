"""Regenerate the shipped pre- and post-processing graphs: python scripts/make_processing_graphs.py [FOLDER]
(default lipsync_cli/models/processing)."""

import sys
from pathlib import Path

from lipsync_cli.models.graphs.builder import save
from lipsync_cli.models.graphs.processing import GRAPHS

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1] / "lipsync_cli" / "models" / "processing"
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else root
    for name, (build, doc) in GRAPHS.items():
        save(build().model(doc), folder / name)
        print(f"{folder / name}  {(folder / name).stat().st_size:,} bytes")
