"""What the lab ships: the programs that run inside its container images and router/LAN namespaces.

Rule: stdlib only. These run inside images and router namespaces (with the image's python or the
router's /usr/bin/python3, no venv, often not even this repository on sys.path); they import nothing
from netviz_lab or netviz_pipeline, nor from each other. tests/unit/test_lab_shipped.py parses every
module here and fails on any import outside the standard library (tests/unit/test_lab_layers.py checks
that nothing here imports the lab). A shipped program that needs a lab helper gets its own small copy.

| file | where it runs | put there by |
|---|---|---|
| `caretta_standin.py` | the Caretta stand-in image `quay.io/groundcover/caretta:v0.0.16`, as `/app/caretta_standin.py` | `images/recipes.py` (caretta recipe; its content is part of the image's cache key) |
| `routerinit.py` | each router's network namespace (`ip netns exec <router> /usr/bin/python3 <this file> <spec.json>`): the router's init | `router.router_service` |
| `pfsense/pfsense_emu.py` | the pfSense router's chroot, as `/usr/local/libexec/netviz-pfsense/pfsense_emu.py` (pfSsh.php, php, pkg, pfSense-upgrade are symlinks to it); also on the host once per setup (`factory-setup`) | `router._pfsense_files` |
| `pfsense/__init__.py` | nowhere: the emulation's documentation (what is reproduced, from which upstream file) | - |
| `softflowd-boot.sh` | the Linux router's chroot, as `/usr/local/libexec/netviz-lab/softflowd-boot` (its boot command) | `router._linux_boot_script` |
| `traffic.py` | each router's LAN namespace (client) and WAN namespace (server): the steady lab traffic | `router.traffic_services` |
| `pause.c` | the pause image `registry.k8s.io/pause:3.10`, compiled statically to `/pause` | `images/recipes.py` (pause recipe; its content is part of the image's cache key) |

The host-side code that orchestrates them stays outside this package (router.py, images/). Host code
finds the files through the paths below; nothing here is imported by the programs themselves.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CARETTA_STANDIN = HERE / "caretta_standin.py"
ROUTERINIT = HERE / "routerinit.py"
PFSENSE_EMU = HERE / "pfsense" / "pfsense_emu.py"
SOFTFLOWD_BOOT = HERE / "softflowd-boot.sh"
TRAFFIC = HERE / "traffic.py"
PAUSE_C = HERE / "pause.c"
