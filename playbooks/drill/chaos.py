#!/usr/bin/env python3
"""Draw N faults from the catalogue with a seed, so a chaos run can be replayed.

Usage: chaos.py SEED N NAME,NAME,...  -> {"seed": SEED, "faults": [...]}
No fault is drawn twice in a row (the second would hit a stack still healing).
"""

import json
import random
import sys

seed, count, catalog = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
rng = random.Random(seed)
faults: list[str] = []
while len(faults) < count:
    choice = rng.choice(catalog)
    if not faults or choice != faults[-1]:
        faults.append(choice)
print(json.dumps({"seed": seed, "faults": faults}))
