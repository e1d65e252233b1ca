"""Regenerate the demo character: python scripts/make_alice.py [FOLDER] (default characters/alice)."""

import sys
from pathlib import Path

from lipsync_cli.characters.demo import write_alice

if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "characters" / "alice"
    write_alice(folder)
    for f in sorted(folder.iterdir()):
        print(f"{f}  {f.stat().st_size:,} bytes")
