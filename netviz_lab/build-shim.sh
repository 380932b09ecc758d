#!/bin/sh
# Build the libpcap immediate-mode LD_PRELOAD shim (netviz_pipeline/router_assets/pcap_immediate.c)
# into $NETVIZ_LAB_CACHE/lib/libpcap-immediate.so. Idempotent: rebuilds only when the source changed.
# The lab's routers preload it into softflowd (see netviz_lab/router.py for why).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../netviz_pipeline/router_assets/pcap_immediate.c"
cache="${NETVIZ_LAB_CACHE:-/var/cache/netviz-lab}"
out="$cache/lib/libpcap-immediate.so"
stamp="$out.sha256"
sum=$(sha256sum "$src" | cut -d' ' -f1)
if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    echo "$out (up to date)"
    exit 0
fi
mkdir -p "$cache/lib"
tmp="$out.tmp.$$"
cc -shared -fPIC -O2 -Wall -o "$tmp" "$src" -ldl
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
echo "$sum" > "$stamp"
echo "$out (built)"
