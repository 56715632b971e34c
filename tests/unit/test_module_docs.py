"""Each module's documentation, as ansible-doc renders it (doc fragments merged), says what its argument
spec does; meta/runtime.yml's action groups list the modules, and a group's defaults fit each of them."""

import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from ansible_collections.rtmx.ha.plugins.module_utils.haproxy_stats import haproxy_stats_argument_spec
from ansible_collections.rtmx.ha.plugins.module_utils.patroni import patroni_argument_spec
from ansible_collections.rtmx.ha.plugins.module_utils.pgwire import pgbouncer_argument_spec
from ansible_collections.rtmx.ha.plugins.module_utils.redis_client import sentinel_argument_spec

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
RUNTIME = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
# Each doc fragment documents the options of one argument spec function, as it makes them by default.
FRAGMENTS = {
    "patroni": patroni_argument_spec,
    "sentinel": sentinel_argument_spec,
    "haproxy_stats": haproxy_stats_argument_spec,
    "pgbouncer": pgbouncer_argument_spec,
}
# What module_defaults of each action group may set: the group's defaults go to every module in it.
GROUP_OPTIONS = {
    "ha": {"timeout"},
    "patroni": set(patroni_argument_spec()),
    "sentinel": set(sentinel_argument_spec()),
    "haproxy": set(haproxy_stats_argument_spec()),
}


class Captured(Exception):
    """Raised by the stand-in for AnsibleModule, carrying what main() passed to it."""


def module_kwargs(name, monkeypatch):
    """The keyword arguments main() of rtmx.ha.<name> gives AnsibleModule (argument_spec, ...)."""
    module = importlib.import_module("ansible_collections.rtmx.ha.plugins.modules.%s" % name)

    def stand_in(**kwargs):
        raise Captured(kwargs)

    monkeypatch.setattr(module, "AnsibleModule", stand_in)
    with pytest.raises(Captured) as captured:
        module.main()
    return captured.value.args[0]


@pytest.fixture(scope="module")
def docs():
    """ansible-doc --json for every module, through ansible.cfg (rtmx.ha resolves from .collections)."""
    ansible_doc = pathlib.Path(sys.executable).parent / "ansible-doc"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    done = subprocess.run([str(ansible_doc), "-t", "module", "--json"] + ["rtmx.ha.%s" % m for m in MODULES],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert sorted(found) == ["rtmx.ha.%s" % m for m in MODULES], done.stderr
    return dict((name.split(".")[-1], entry["doc"]) for name, entry in found.items())


def test_there_are_modules():
    assert {"patroni_info", "patroni_switchover", "sentinel_info", "sentinel_failover", "ha_verify"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docs_say_check_mode_and_diff_mode_support(docs, name):
    attributes = docs[name].get("attributes") or {}
    for attribute in ("check_mode", "diff_mode"):
        assert attribute in attributes, "%s documents no %s attribute" % (name, attribute)
        assert attributes[attribute].get("support") in ("full", "partial", "none"), (name, attributes[attribute])
        assert attributes[attribute].get("description"), (name, attribute)
    if attributes["check_mode"]["support"] == "partial":
        assert attributes["check_mode"].get("details"), "%s: partial check mode support needs details" % name


@pytest.mark.parametrize("name", MODULES)
def test_every_option_is_documented_as_the_argument_spec_has_it(docs, name, monkeypatch):
    spec = module_kwargs(name, monkeypatch)["argument_spec"]
    options = docs[name].get("options") or {}
    assert sorted(options) == sorted(spec), "%s: documented %s, argument spec %s" % (
        name, sorted(set(options) - set(spec)), sorted(set(spec) - set(options)))
    for option, arg in spec.items():
        doc = options[option]
        assert doc.get("description"), "%s: %s has no description" % (name, option)
        documented = (doc.get("required", False), doc.get("default"), doc.get("type", "str"), doc.get("elements"),
                      doc.get("choices"))
        specified = (arg.get("required", False), arg.get("default"), arg.get("type", "str"), arg.get("elements"),
                     arg.get("choices"))
        assert documented == specified, (
            "%s: %s documented (required, default, type, elements, choices) %r, argument spec %r"
            % (name, option, documented, specified))


@pytest.mark.parametrize("name", MODULES)
def test_cross_checks_name_options_of_the_argument_spec(name, monkeypatch):
    kwargs = module_kwargs(name, monkeypatch)
    spec = kwargs["argument_spec"]
    assert kwargs.get("supports_check_mode") is True
    for rule in kwargs.get("required_if") or []:
        assert rule[0] in spec and set(rule[2]) <= set(spec), (name, rule)
    for group in (kwargs.get("required_together") or []) + (kwargs.get("mutually_exclusive") or []):
        assert set(group) <= set(spec), (name, group)


@pytest.mark.parametrize("fragment", sorted(FRAGMENTS))
def test_doc_fragments_document_their_argument_spec_function(fragment):
    source = importlib.import_module("ansible_collections.rtmx.ha.plugins.doc_fragments.%s" % fragment)
    options = yaml.safe_load(source.ModuleDocFragment.DOCUMENTATION)["options"]
    spec = FRAGMENTS[fragment]()
    assert sorted(options) == sorted(spec), fragment
    for option, arg in spec.items():
        doc = options[option]
        assert (doc.get("required", False), doc.get("default"), doc["type"], doc.get("elements")) == (
            arg.get("required", False), arg.get("default"), arg["type"], arg.get("elements")), (fragment, option)


def test_action_groups_list_exactly_the_modules():
    groups = RUNTIME["action_groups"]
    assert sorted(groups["ha"]) == MODULES, "group ha must list every module under plugins/modules"
    for group, members in groups.items():
        assert len(members) == len(set(members)), group
        assert set(members) <= set(MODULES), "group %s names modules that do not exist: %s" % (
            group, sorted(set(members) - set(MODULES)))
    assert set(groups) == set(GROUP_OPTIONS)


@pytest.mark.parametrize("group", sorted(GROUP_OPTIONS))
def test_a_group_default_fits_every_module_of_the_group(group, monkeypatch):
    """module_defaults of group/rtmx.ha.<group> go to every module of it: each must accept them all."""
    for name in RUNTIME["action_groups"][group]:
        spec = module_kwargs(name, monkeypatch)["argument_spec"]
        assert GROUP_OPTIONS[group] <= set(spec), "%s would refuse %s set for group %s" % (
            name, sorted(GROUP_OPTIONS[group] - set(spec)), group)


@pytest.mark.parametrize("name", MODULES)
def test_modules_accepting_a_group_options_are_in_the_group(name, monkeypatch):
    spec = module_kwargs(name, monkeypatch)["argument_spec"]
    for group, options in GROUP_OPTIONS.items():
        if options <= set(spec):
            assert name in RUNTIME["action_groups"][group], "%s takes the options of group %s" % (name, group)


@pytest.mark.parametrize("name", MODULES)
def test_docs_name_the_action_groups_of_the_module(docs, name):
    membership = docs[name]["attributes"]["action_group"]["membership"]
    expected = ["rtmx.ha.%s" % g for g, members in RUNTIME["action_groups"].items() if name in members]
    assert sorted(membership) == sorted(expected), name
