"""`python -m procrustes`: the command line (procrustes.tooling.cli)."""
from .tooling.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
