"""``python -m lsync``: the same command line as the ``lsync`` script."""

from lsync.cli import main

if __name__ == "__main__":
    main()
