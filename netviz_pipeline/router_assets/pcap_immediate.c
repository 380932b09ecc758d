/*
 * pcap_immediate.c - LD_PRELOAD shim for softflowd on Linux with libpcap >= 1.10.
 *
 * Why: softflowd 1.1.0 (Debian 12) opens its capture with a zero pcap timeout. With libpcap 1.10's
 * TPACKET_V3 ring, packets are only handed to softflowd when a ring block fills (~1,400 small
 * packets), so on a quiet interface it exports nothing for a very long time. Upstream fixed it by
 * enabling immediate mode (irino/softflowd PR #71). This shim does the same without rebuilding:
 * every call to pcap_set_timeout() also turns on immediate mode, then calls the real function.
 *
 * Build (on the router):  cc -shared -fPIC -O2 -o libpcap-immediate.so pcap_immediate.c -ldl
 * Use:                    LD_PRELOAD=/path/libpcap-immediate.so softflowd -i eth1 ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pcap/pcap.h>

int pcap_set_timeout(pcap_t *p, int to_ms)
{
	static int (*real_set_timeout)(pcap_t *, int);

	if (real_set_timeout == NULL)
		real_set_timeout = (int (*)(pcap_t *, int))dlsym(RTLD_NEXT, "pcap_set_timeout");
	pcap_set_immediate_mode(p, 1);
	return real_set_timeout != NULL ? real_set_timeout(p, to_ms) : 0;
}
