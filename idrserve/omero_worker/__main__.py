"""`python -m idrserve.omero_worker`: run the OMERO reader worker (see worker.py)."""

import sys

from idrserve.omero_worker.worker import main

sys.exit(main())
