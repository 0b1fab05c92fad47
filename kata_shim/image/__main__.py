"""`python -m kata_shim.image build ...`."""

import sys

from kata_shim.image.builder import main

sys.exit(main())
