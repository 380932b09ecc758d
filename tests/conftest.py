"""Shared fixtures. Lab tests (marker `lab`) need the lab up: `make test` starts it once."""
from __future__ import annotations

import subprocess
import sys

import pytest

from netviz_lab.lab import Lab
from netviz_lab.supervisor import read_state, supervisor_alive


@pytest.fixture(scope="session")
def lab() -> Lab:
    lab = Lab()
    if not (supervisor_alive(lab) and read_state(lab).get("phase") == "ready"):
        subprocess.run([sys.executable, "-m", "netviz_lab", "up"], check=True)
    return Lab(nodes=read_state(lab).get("nodes", 0))


@pytest.fixture(scope="session")
def admin_api(lab: Lab):
    from kubernetes import config

    return config.new_client_from_config(config_file=str(lab.admin_kubeconfig))
