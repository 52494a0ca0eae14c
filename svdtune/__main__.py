import sys

from svdtune.cli import main

sys.exit(main())
