#!/bin/sh
# netviz-lab: boot-time start of Debian softflowd instances on the Linux router (no systemd there).
#
# Why not /etc/init.d/softflowd: Debian 12's script (softflowd 1.1.0) passes `--pid_file` to
# start-stop-daemon, which only knows `--pidfile`, so on a sysvinit Debian 12 it starts nothing
# ("Restarting ...: <inst> failed!"). This does what it means to do (and what softflowd@.service's
# ExecStart does): for every /etc/softflowd/<inst>.conf with a non-empty `interface`, source it (as
# shell, so `export LD_PRELOAD=...` in it applies) and run
#   softflowd -i $interface -p /run/softflowd/<inst>.pid -c /run/softflowd/<inst>.ctl $options
# Then, like Debian's initscripts, it runs /etc/rc.local if it is executable.
PATH=/sbin:/usr/sbin:/bin:/usr/bin
mkdir -p /run/softflowd/chroot
install -D -p /etc/protocols /run/softflowd/chroot/etc/protocols
for config in /etc/softflowd/*.conf; do
    [ -f "$config" ] || continue
    instance=$(basename "$config" .conf)
    (
        interface=
        options=
        sh -n "$config" 2>/dev/null || { echo "softflowd-boot: $config: syntax error"; exit 1; }
        . "$config"
        [ -n "$interface" ] || exit 0
        # shellcheck disable=SC2086 # options is a word list by design (as in Debian's script)
        start-stop-daemon --start --quiet --pidfile "/run/softflowd/$instance.pid" --exec /usr/sbin/softflowd -- \
            -i "$interface" -p "/run/softflowd/$instance.pid" -c "/run/softflowd/$instance.ctl" $options \
            && echo "softflowd-boot: started instance $instance on $interface" \
            || echo "softflowd-boot: instance $instance failed to start"
    )
done
if [ -x /etc/rc.local ]; then
    /etc/rc.local
fi
exit 0
