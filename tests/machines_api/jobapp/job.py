"""One job: says which it is, then exits with a code of its own (3 x its number)."""

import os
import sys

number = int(sys.argv[1])
print(f"job {number} on machine {os.environ['FLY_MACHINE_ID']}", flush=True)
sys.exit(number * 3)
