"""The pod runner provides the image's WORKDIR files (./goflow2) to `sh -c` entrypoints."""
from __future__ import annotations

from netviz_lab import podspec


def test_goflow2_workdir_files_only_in_the_image_workdir():
    prof = podspec.map_image("netsampler/goflow2:v2.2.1", "/cache/goflow2-v2.2.1", "v2.2.1")
    assert podspec.workdir_for({"name": "c"}, prof) == ("/", {"goflow2": "/cache/goflow2-v2.2.1"})
    assert podspec.workdir_for({"name": "c", "workingDir": "/tmp"}, prof) == ("/tmp", {})
    py = podspec.map_image("python:3.12-alpine", "/x", "v2.2.1")
    assert podspec.workdir_for({"name": "c"}, py) == ("/", {})
    # the aggregator sidecar's command maps to the system python
    assert podspec.resolve_argv({"name": "flowagg", "command": ["python3", "-u", "/etc/netviz-flowagg/flowagg.py"]},
                                py, {})[0] == podspec.SYSTEM_PYTHON
