"""`python -m workers`: run a worker. `python -m workers --check`: is one alive on this host?"""

import sys

from workers.main import main

sys.exit(main())
