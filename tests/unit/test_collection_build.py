"""What `ansible-galaxy collection build` packs: never a generated secret, and one licence throughout."""

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECRET = "generated-" + os.urandom(8).hex()  # built at run time: this file is packed too
# Where a deploy leaves credentials on the controller: the default secrets directory beside
# an inventory, the lab's state, a drill probe's configuration.
PLANTED = [".secrets/example/redis_password", "inventories/.secrets/example/postgres_rtmx_password",
           ".lab/secrets/redis_password", ".lab/connection.env",
           "reports/drills/20261127T000000Z/01-leader_node_loss.probe-config.json"]


def test_a_build_after_a_deploy_packs_no_secret(tmp_path):
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    for name in PLANTED:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(SECRET + "\n")
    galaxy = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", "--output-path", str(tmp_path / "out"), str(source)], check=True,
                   capture_output=True)
    (tarball,) = (tmp_path / "out").glob("*.tar.gz")
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
        names = [m.name for m in members]
        leaked = [m.name for m in members if m.isfile() and SECRET.encode() in archive.extractfile(m).read()]
    assert leaked == [], f"secrets packed into the collection: {leaked}"
    assert not [n for n in names if ".secrets" in n or n.startswith((".lab", "reports"))], names
    assert "LICENSE" in names and "plugins/modules/patroni_switchover.py" in names


def test_one_licence_in_galaxy_roles_and_headers():
    licence = yaml.safe_load((ROOT / "galaxy.yml").read_text())["license"]
    assert licence == ["GPL-3.0-or-later"]
    assert "GNU GENERAL PUBLIC LICENSE\n                       Version 3" in (ROOT / "LICENSE").read_text()
    for meta in ROOT.glob("roles/*/meta/main.yml"):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["license"] == "GPL-3.0-or-later", meta
    for plugin in ROOT.glob("plugins/**/*.py"):
        if plugin.name != "__init__.py":
            assert "GNU General Public License v3.0+ (see LICENSE" in plugin.read_text(), plugin


def test_execution_environment_names_the_controller_requirements():
    ee = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    assert ee["version"] == 1 and (ROOT / ee["dependencies"]["python"]).is_file()
    assert "psycopg" in (ROOT / ee["dependencies"]["python"]).read_text()
