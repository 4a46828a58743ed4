import sys

from pikenas.search.cli import main

sys.exit(main())
