# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter rtmx.ha.restore_backup_check: can the repository serve playbooks/restore.yml's plan."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: restore_backup_check
short_description: What the pgBackRest repository says about a restore plan of playbooks/restore.yml
version_added: 0.1.0
description:
  - Reads C(pgbackrest --output=json info) of the repository host against a plan of C(rtmx.ha.restore_plan). The
    stanza must have a backup, the asked backup set must exist, a time target must not be before the end of the oldest
    backup kept.
  - Says whether new replicas may be restored from the newest backup afterwards (only when the recovery ends after
    it; otherwise they start from a backup beyond the new timeline's branch point, and pg_basebackup is used).
positional: info, stanza
options:
  _input:
    description: The plan (C(rtmx.ha.restore_plan)'s result).
    type: dict
    required: true
  info:
    description: What C(pgbackrest --output=json info) answered (parsed).
    type: list
    elements: dict
    required: true
  stanza:
    description: The stanza of the cluster.
    type: str
    required: true
'''

EXAMPLES = r'''
- name: The repository can serve the plan
  ansible.builtin.set_fact:
    repository: "{{ plan | rtmx.ha.restore_backup_check(info.stdout | from_json, 'rtmx') }}"
'''

RETURN = r'''
_value:
  description: The keys C(problems) (list), C(backups) (labels, oldest first) and C(replicas_from_repository) (bool).
  type: dict
'''

from ansible_collections.rtmx.ha.plugins.module_utils.restore import restore_backup_check


class FilterModule(object):
    def filters(self):
        return {'restore_backup_check': restore_backup_check}
