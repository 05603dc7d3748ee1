import sys

from jaxww.cli import main

sys.exit(main())
