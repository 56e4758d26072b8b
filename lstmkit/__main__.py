"""`python -m lstmkit ...` (also what `torchrun -m lstmkit train` runs)."""
import sys

from lstmkit.cli import main

sys.exit(main())
