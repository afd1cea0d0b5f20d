"""``python -m itaclip.cli`` (and ``torchrun ... -m itaclip.cli``)."""

import sys

from . import main

sys.exit(main())
