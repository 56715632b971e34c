# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Polling with a deadline, and a monotonic stopwatch for the timings modules return."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


def poll(check, timeout, interval=0.5):
    """Call check() until it returns something truthy or timeout seconds pass.

    Returns (value, elapsed seconds); value is the last falsy answer on timeout.
    """
    start = time.monotonic()
    while True:
        value = check()
        elapsed = time.monotonic() - start
        if value or elapsed >= timeout:
            return value, round(elapsed, 3)
        time.sleep(min(interval, max(0.0, timeout - elapsed)))


class Stopwatch(object):
    def __init__(self):
        self.start = time.monotonic()

    def lap(self):
        return round(time.monotonic() - self.start, 3)
