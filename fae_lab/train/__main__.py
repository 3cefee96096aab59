import sys

from fae_lab.train.cli import main

sys.exit(main(prog="python -m fae_lab.train"))
