import sys

from fae_lab.cli import main

sys.exit(main())
