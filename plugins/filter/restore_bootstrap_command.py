# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter rtmx.ha.restore_bootstrap_command: the pgbackrest restore command Patroni's custom bootstrap runs."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: restore_bootstrap_command
short_description: The pgbackrest restore command of Patroni's custom bootstrap for a point-in-time recovery
version_added: 0.1.0
description:
  - Joins C(/usr/bin/pgbackrest --stanza=STANZA), the restore options of a plan of C(rtmx.ha.restore_plan) and
    C(restore), each quoted for the shell-like split Patroni makes of a bootstrap command.
positional: stanza
options:
  _input:
    description: The pgbackrest restore options (the plan's C(options)).
    type: list
    elements: str
    required: true
  stanza:
    description: The stanza of the cluster.
    type: str
    required: true
'''

EXAMPLES = r'''
- name: Patroni's bootstrap command
  ansible.builtin.set_fact:
    command: "{{ plan.options | rtmx.ha.restore_bootstrap_command('rtmx') }}"
'''

RETURN = r'''
_value:
  description: The command, for example C(/usr/bin/pgbackrest --stanza=rtmx --type=time '--target=2026-11-28 09:15:00+00'
    --target-action=promote restore).
  type: str
'''

from ansible_collections.rtmx.ha.plugins.module_utils.restore import bootstrap_command


def restore_bootstrap_command(options, stanza):
    return bootstrap_command(stanza, options)


class FilterModule(object):
    def filters(self):
        return {'restore_bootstrap_command': restore_bootstrap_command}
