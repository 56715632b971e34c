#!/usr/bin/env python3
"""Draw N faults from the catalogue with a seed, so a chaos run can be replayed.

Usage: chaos.py SEED N NAME,NAME,...  -> {"seed": SEED, "faults": [{"drill": NAME, "pick": I}, ...]}
`pick` chooses the node the fault hits (index into the drill's candidate
group, see run_one.yml): the drill first makes that node what the fault
needs (e.g. the Patroni leader), so a replay hits the same nodes whatever
state earlier drills left. No fault is drawn twice in a row (the second would
hit a stack still healing).
"""

import json
import random
import sys

PICKS = 1000  # larger than any group: pick % len(group) is uniform enough


def draw(seed: str, count: int, catalog: list) -> list:
    rng = random.Random(seed)
    faults: list[dict] = []
    while len(faults) < count:
        choice = rng.choice(catalog)
        if not faults or choice != faults[-1]["drill"]:
            faults.append({"drill": choice, "pick": rng.randrange(PICKS)})
    return faults


if __name__ == "__main__":
    seed, count, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    print(json.dumps({"seed": seed, "faults": draw(seed, count, names)}))
