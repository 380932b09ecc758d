"""pfSense emulation for the lab router `nvz-pfsense` (pfSense itself is FreeBSD and cannot run here).

The router is a Linux network namespace + chroot (netviz_lab/shipped/routerinit.py) reached over SSH
like a pfSense box; the emulation (netviz_lab/shipped/pfsense/pfsense_emu.py, Python stdlib, installed in
the router at /usr/local/libexec/netviz-pfsense/) reproduces the command surface and files the pipeline's pfSense
path uses, on top of the **real** softflowd 1.1.0. Ported from pfSense sources: pfsense/FreeBSD-ports
`net-mgmt/pfSense-pkg-softflowd/files/usr/local/pkg/softflowd.{inc,xml}`; pfsense/pfsense
`src/etc/phpshellsessions/{svc,installpkg,uninstallpkg,listpkg}`, `src/etc/inc/service-utils.inc`
(write_rcfile, start/stop/restart_service, is_service_running), `src/etc/inc/pkg-utils.inc`
(install_package_xml, sync_package), `src/etc/rc.start_packages`.

Reproduced
----------
- Files: `/cf/conf/config.xml` (`/conf` -> `/cf/conf`), factory config with interfaces
  `wan` -> `vtnet0` (198.18.4.1/24) and `lan` -> `vtnet1` (198.18.3.1/24), `<installedpackages>`
  empty; `/etc/version` (2.7.2-RELEASE), `/etc/platform` (pfSense), stub `/etc/inc/*.inc`.
  No `/etc/softflowd`, no Debian `/etc/init.d/softflowd`, no `/etc/os-release` (hidden).
- `pfSsh.php playback installpkg softflowd` (also `pfSense-pkg-softflowd`): prints
  `Installing package "softflowd"... Done.`; runs `/usr/local/sbin/pfSense-upgrade -y -i
  pfSense-pkg-softflowd`, which "installs" the package (`/usr/local/bin/softflowd`,
  `/usr/local/sbin/softflowctl`, `/usr/local/pkg/softflowd.{inc,xml}`, `pkg info` entries
  `pfSense-pkg-softflowd` and `softflowd`) and does install_package_xml: adds the `<package>` and
  `<service>` (name softflowd, rcfile softflowd.sh, executable softflowd) entries to config.xml and
  runs the package's resync. As on pfSense, installing does **not** create settings: with no
  `installedpackages/softflowd/config` the resync stops the service and removes the rc script.
  Only pfSense-pkg-softflowd can be installed; anything else fails ("No packages available").
  `playback uninstallpkg softflowd` removes it (settings in config.xml are kept); `playback listpkg`.
- `pkg info`, `pkg info -e <name>` (exit 0/1), `pkg info <name>` (exit 70 when missing).
- Settings: `installedpackages/softflowd/config[0]` fields `enable` (`enabled`/`off`), `interface`
  (comma-separated pfSense names; mapped through `interfaces/<name>/if`; unknown names skipped),
  `host` (IP literal; IPv6 bracketed), `port`, `version`, `maxflows`, `hoplimit`, `sample`,
  `flowtracking`, `flowtimestamp`, `timeout-general|maxlife|expint|tcp|tcp-rst|tcp-fin|udp`.
- The sync, `sync_package_softflowd()`, ported line by line: when enabled with a host, writes
  `/usr/local/etc/rc.d/softflowd.sh` in write_rcfile's exact format, rc_start =
  `/usr/bin/killall -9 softflowd` then one `/usr/local/bin/softflowd  -i '<n>:<if>' -n '<host>:<port>'
  [-m][-L][-s] -v .. [-T][-A] -t ... -p '/var/run/softflowd.<if>.pid' -c '/var/run/softflowd.<if>.ctl'`
  per interface (quoted like PHP escapeshellarg; the index n counts from 1), rc_stop = killall;
  then (not at boot) restarts the service if running, else starts it (in the background, like
  mwexec_bg). Disabled or no host: stops the service and deletes the rc script.
- Triggering the sync from the CLI, the ways pfSense offers (all call the same port):
  `php -r 'require_once("/usr/local/pkg/softflowd.inc"); sync_package_softflowd();'`
  (also `require_once("softflowd.inc")` via the include path, `require_once("pkg-utils.inc");
  sync_package("softflowd");`, `resync_all_package_configs();`), `php -f file.php`, `php file.php`,
  and `pfSsh.php` reading such lines on stdin, run at each `exec` / `exec;` line, ended by `exit`.
  **There is no PHP**: `/usr/local/bin/php` is an emulation that understands only statements of
  the forms `require_once/require/include(_once)("<file>")`, `global $config`,
  `$config['a']['b'][0]['c'] = '<literal>'`, `unset($config[...])`, `parse_config(...)`,
  `write_config("<desc>")`, `sync_package_softflowd()`, `sync_package("softflowd")`,
  `resync_all_package_configs()`, `start_service|stop_service|restart_service|is_service_running("x")`,
  `echo '<literal>'`; anything else is a PHP fatal error (exit 255), never a silent success.
  Functions exist only after requiring the file that defines them (softflowd.inc,
  pkg-utils.inc, service-utils.inc, config.inc, functions.inc), otherwise "Call to undefined
  function" (exit 255); requiring softflowd.inc before the package is installed fails.
  `$config` changes live in memory until `write_config()`: a sync without write_config() runs the
  new settings but they are lost at the next boot (as on pfSense).
- `pfSsh.php playback svc start|stop|restart|status softflowd`: svc's messages
  (`Attempting to issue start to softflowd service...`, `softflowd has been started.`,
  `Service softflowd is running.` / `... is stopped.`). start runs the rc script in the background,
  stop runs `rc stop` (killall -9), restart = stop if running + start; **none of them re-reads
  config.xml** (a changed setting needs the sync); status = a process named softflowd exists
  (pgrep -x). svc on a package that is not installed prints success and does nothing, as on pfSense.
- rc.conf: pfSense has none and deletes one you create: the router's boot deletes `/etc/rc.conf`.
- Boot (`reboot_router`): rc.conf deleted, then rc.start_packages: each installed package synced
  with platform_booting() (rc script rewritten from config.xml, not started) and its service started;
  other executable `/usr/local/etc/rc.d/*.sh` started with `start`. So softflowd runs after a reboot
  iff it is enabled in the written config.xml.
- Processes: the router has its own PID namespace, so `killall`, `pgrep`, `ps` and the pid files
  see only the router's processes, as on a separate box.

Not reproduced (differences the pipeline may meet on a real pfSense)
--------------------------------------------------------------------
- The OS is Linux: `uname` says Linux, interfaces are veths named vtnet0/vtnet1, the shell tools are
  GNU/Debian ones, no FreeBSD `sysrc`/`service`/`daemon`, root's login shell is bash (pfSense's is
  the console menu /etc/rc.initial, which runs commands given to `ssh host cmd` anyway).
- No web GUI, no XML-RPC, no config.xml validation (validate_form_softflowd runs only in the GUI),
  no /tmp/config.cache (edits to config.xml are seen at once; pfSense may use its cache until it is
  removed or write_config() runs), no config backups/history, no package repository or versions.
- softflowd is the Debian 1.1.0 binary with the libpcap immediate-mode shim preloaded by the
  /usr/local/bin/softflowd wrapper (FreeBSD's BPF has no zero-timeout trap, so the emulated box must
  not show it). The wrapper also waits (<=10 s) for a SIGKILLed predecessor named in the pid file to
  finish exiting: on Linux that takes long enough to make softflowd refuse to start after the rc
  script's `killall -9`.
"""
