import sys

from medrecon.cli import main

sys.exit(main())
