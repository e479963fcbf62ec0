"""The pytest plugin: `auditd_server` in this repo, and in ANOTHER project that installed auditd
(a temp directory outside this repo, a non-editable install of this checkout, `python -m pytest`
there with the plugin found through the `pytest11` entry point alone)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from auditd.pytest_plugin import AuditdServerError
from realclients import real_clients  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent

OTHER_PROJECT_TEST = '''
import json
import json
import os
import subprocess
import sys

import auditd

seen = []


def test_it_uses_the_installed_auditd_not_a_checkout():
    assert auditd.__file__.startswith(os.environ["SITE_UNDER_TEST"]), auditd.__file__


def test_records_and_lists_an_action(auditd_server):
    auditd_server.reset()
    seen.append(auditd_server.url)
    with auditd_server.client() as api:
        made = api.record(action="Service Create", object="/api/app/v1/service/web/")
        listed = [a["uuid"] for a in api.list()["objects"]]
    assert listed == [made["uuid"]]
    with open("evidence.json", "w") as f:
        json.dump({"uuid": made["uuid"], "pid": auditd_server.proc.pid}, f)


def test_a_new_user_and_the_env_for_a_command_line_client(auditd_server):
    auditd_server.reset()                      # what the other test recorded is gone
    seen.append(auditd_server.url)
    key = auditd_server.add_user("ci", role="producer")
    assert auditd_server.add_user("ci", role="producer") == key
    env = dict(os.environ, **auditd_server.env_for("ci"))
    subprocess.run([sys.executable, "-m", "auditd", "action", "ls", "-q"], env=env, check=True)
    with auditd_server.client("ci") as api:
        api.record(action="Node Create")
    out = subprocess.run([sys.executable, "-m", "auditd", "action", "ls", "--json"], env=env,
                         check=True, capture_output=True, text=True).stdout
    assert [a["action"] for a in json.loads(out)] == ["Node Create"]
    assert seen[0] == seen[-1]                 # one server for the session
'''


def readme_example() -> str:
    """The example test file of the README's section "In another project's tests"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## In another project's tests"):]
    block = section[section.index("    # tests/test_audit.py\n"):]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)) + "\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """This checkout built and installed (not editable) into a directory of its own, the way
    `pip install auditd` would; its dependencies come from this environment."""
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"          # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "auditd", source / "auditd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    site = base / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                             "--disable-pip-version-check", "--target", str(site), str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return site


def test_another_project_and_the_readme_example_get_auditd_server_from_the_entry_point(installed, tmp_path):
    project = tmp_path / "other-project"
    project.mkdir()
    (project / "test_deploys.py").write_text(OTHER_PROJECT_TEST)
    (project / "test_audit.py").write_text(readme_example())     # the README's example, as is
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST", "DOCKERCLOUD_", "AUDITD_"))}
    env.update(PYTHONPATH=str(installed), SITE_UNDER_TEST=str(installed),
               PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout
    evidence = json.loads((project / "evidence.json").read_text())
    assert len(evidence["uuid"]) == 36
    with pytest.raises(ProcessLookupError):          # the server stopped with the session
        os.kill(evidence["pid"], 0)


def test_without_the_plugin_the_fixture_is_missing(installed, tmp_path):
    # the control for the test above: it is the entry point that provides the fixture
    (tmp_path / "test_x.py").write_text("def test_x(auditd_server):\n    pass\n")
    env = dict(os.environ, PYTHONPATH=str(installed))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:auditd",
                             "-p", "no:cacheprovider"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "fixture 'auditd_server' not found" in result.stdout


# ---------------------------------------------------------------------------- in this repo

def test_add_user_env_and_reset(auditd_server):
    auditd_server.reset()
    key = auditd_server.add_user("plugin-user")
    assert auditd_server.add_user("plugin-user") == key == auditd_server.key_of("plugin-user")
    with pytest.raises(AuditdServerError, match="exists with role user, not admin"):
        auditd_server.add_user("plugin-user", role="admin")
    with pytest.raises(KeyError, match="add_user first"):
        auditd_server.env_for("nobody")
    assert auditd_server.env_for("plugin-user") == {
        "DOCKERCLOUD_REST_HOST": auditd_server.url,
        "DOCKERCLOUD_STREAM_HOST": auditd_server.ws_url,
        "DOCKERCLOUD_USER": "plugin-user", "DOCKERCLOUD_APIKEY": key}
    assert auditd_server.url.startswith("http://127.0.0.1:")
    assert auditd_server.ws_url == "ws" + auditd_server.url[4:]
    with auditd_server.client() as api:
        api.record(action="Node Create", user="plugin-user")
        with auditd_server.client("plugin-user") as mine:
            assert len(mine.list()["objects"]) == 1
        assert auditd_server.reset()["actions"] == 1
        assert api.list()["objects"] == []
    assert auditd_server.seed([{"action": "Node Create"}])["loaded"] == 1


def test_env_points_the_real_docker_cloud_cli_at_it(real_clients, auditd_server):
    auditd_server.reset()
    auditd_server.add_user("plugin-cli")
    with auditd_server.client() as api:
        made = api.record(action="Service Create", user="plugin-cli")
    env = real_clients.env(auditd_server.url, None, None)      # the clients' own set-up ...
    env.update(auditd_server.env_for("plugin-cli"))              # ... aimed by the fixture
    result = subprocess.run(real_clients.cli_argv("action", "ls", "-q"), env=env,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, made["uuid"] + "\n"), result.stderr


def test_a_server_that_cannot_start_says_why(tmp_path):
    from auditd.pytest_plugin import AuditdServer
    (tmp_path / "auditd.db").write_text("not a database")
    with pytest.raises(AuditdServerError, match="exited .* instead of listening"):
        AuditdServer(tmp_path).start()
