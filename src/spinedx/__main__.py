"""``python -m spinedx``: the same as the ``spinedx`` command."""

from spinedx.cli import main

if __name__ == "__main__":
    main()
