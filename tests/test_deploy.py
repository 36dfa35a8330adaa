"""The shipped deployment files: the `ray up` local-provider example passes Ray's own config validation (the
cluster launcher's), and the systemd units restart their node, read the token and storage environment files and
run the scripts in the foreground (checked with `systemd-analyze verify` where it exists). Rejoining itself is
tests/test_cluster.py's (scripts/supervise.sh, the same policy as the units)."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def test_ray_up_example_passes_rays_config_validation():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((DEPLOY / "ray-up-local.yaml").read_text())
    prepared = prepare_config(config)  # the local provider's preparation, then Ray's defaults
    validate_config(prepared)  # raises on a field the launcher does not know or a wrong type
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"])
    commands = prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]
    assert not any("ray stop" in c for c in commands), commands  # would end other users' Ray processes
    assert any("scripts/cluster_head.sh" in c for c in commands) and any("cluster_worker.sh" in c for c in commands)
    assert "~/.ray/auth_token" in prepared["file_mounts"]  # the token reaches every node over SSH


def test_a_broken_ray_up_file_is_refused_by_the_same_validation():
    """The validation above can fail: a misspelt field is refused."""
    pytest.importorskip("jsonschema")
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((DEPLOY / "ray-up-local.yaml").read_text())
    config["setup_comands"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("path", UNITS, ids=[p.stem for p in UNITS])
def test_units_restart_their_node_with_the_env_files(path):
    svc = unit(path)["Service"]
    assert svc["Restart"] == "always" and int(svc["RestartSec"]) > 0
    assert "--foreground" in svc["ExecStart"]  # systemd owns the process: no background start, no pid file race
    script = svc["ExecStart"].split()[0].replace("/opt/tune_p7/", "")
    assert (REPO / script).is_file()
    files = path.read_text().count("EnvironmentFile=")
    assert files == 2 and (DEPLOY / "systemd" / "node.env.example").exists()


@pytest.mark.parametrize("path", UNITS, ids=[p.stem for p in UNITS])
def test_units_pass_systemd_analyze_verify(path, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze here")
    text = path.read_text().replace("/opt/tune_p7", str(REPO)).replace("/etc/tune_p7", str(tmp_path))
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("User="))  # no such user here
    (tmp_path / "node.env").write_text((DEPLOY / "systemd" / "node.env.example").read_text())
    (tmp_path / "storage.env").write_text((DEPLOY / "systemd" / "storage.env.example").read_text())
    copy = tmp_path / path.name
    copy.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if path.name in ln or "error" in ln.lower()]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
