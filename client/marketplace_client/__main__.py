import sys

from marketplace_client.cli import main

sys.exit(main())
