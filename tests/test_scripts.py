"""The shell scripts (cluster/, bench/) pass shellcheck, and the cluster's
settings are the ones docs/airflow.md tells users to set."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT

SCRIPTS = sorted([*ROOT.glob("cluster/*.sh"), *ROOT.glob("bench/*.sh")])


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_pass_shellcheck(script):
    proc = subprocess.run(["shellcheck", "-x", "-e", "SC2030,SC2031", str(script)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_every_cluster_setting_is_documented():
    env = (ROOT / "cluster" / "env.sh").read_text()
    docs = (ROOT / "docs" / "airflow.md").read_text()
    settings = {word.split("=")[0] for line in env.splitlines()
                for word in line.replace("export ", "").split()
                if word.startswith("AIRFLOW__") and "=" in word}
    assert settings, "no Airflow settings found in cluster/env.sh"
    missing = sorted(s for s in settings if s not in docs and f"…__{s.split('__')[-1]}" not in docs)
    assert not missing, f"cluster/env.sh sets {missing}, docs/airflow.md does not say why"
