#!/usr/bin/env python3
"""Print the slowest tests and the failed and errored ones of a JUnit XML file, so a CI log tail names
them and shows where the time went."""

import sys
import xml.etree.ElementTree as ET

path = sys.argv[1]
try:
    root = ET.parse(path).getroot()
except (OSError, ET.ParseError) as exc:
    print(f"== no verifier report at {path}: {exc}")
    sys.exit(0)

SLOWEST = 25
cases = list(root.iter("testcase"))
print(f"== verifier: the {SLOWEST} slowest of {len(cases)} tests (seconds)")
for case in sorted(cases, key=lambda c: float(c.get("time") or 0), reverse=True)[:SLOWEST]:
    print(f"{float(case.get('time') or 0):8.1f}  {case.get('classname')}::{case.get('name')}")

failed = []
for case in cases:
    for kind in ("failure", "error"):
        node = case.find(kind)
        if node is not None:
            name = f"{case.get('classname')}::{case.get('name')}"
            message = (node.get("message") or "").strip().splitlines()[:3]
            trace = (node.text or "").strip().splitlines()[-10:]
            failed.append((kind, name, message + ["..."] + trace))
print(f"== verifier: {len(failed)} failed test(s) in {path}")
for kind, name, lines in failed:
    print(f"-- {kind}: {name}")
    for line in lines:
        print(f"   {line[:300]}")
