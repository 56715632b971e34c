# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtmx.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Access to the Patroni REST API: the options of
    # module_utils.patroni.patroni_argument_spec(). patroni_urls is documented as required, as
    # patroni_argument_spec() makes it; a module calling patroni_argument_spec(required=False)
    # documents patroni_urls itself (required false, default []).
    DOCUMENTATION = r'''
options:
  patroni_urls:
    description:
      - REST base URLs of the Patroni members, for example C(http://10.0.0.11:8008). The first that
        answers speaks for the cluster; give all members so the module works while one is down.
    type: list
    elements: str
    required: true
  patroni_username:
    description: User of the Patroni REST API's basic authentication.
    type: str
    default: patroni
  patroni_password:
    description: Password of the Patroni REST API's basic authentication.
    type: str
  validate_certs:
    description: Verify the TLS certificate when the URLs are C(https).
    type: bool
    default: true
  ca_path:
    description: CA bundle to verify the REST API's certificate.
    type: path
  timeout:
    description: Seconds to wait for each REST call.
    type: int
    default: 5
'''
