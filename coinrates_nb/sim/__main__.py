"""``python -m coinrates_nb.sim``: run the simulator in the foreground until Ctrl-C."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
