/* SPDX-License-Identifier: GPL-2.0 */
/* Small helpers every part of the daemon uses. */
#ifndef PS_UTIL_H
#define PS_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <arpa/inet.h>

/* CLOCK_MONOTONIC in milliseconds: deadlines, timeouts, backoff. */
static inline uint64_t ps_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* "ip:port" (INET_ADDRSTRLEN + 6 bytes fit any) of an IPv4 address and port,
 * both in network order, as the maps and sockaddr_in hold them. */
#define PS_ADDR_STRLEN	(INET_ADDRSTRLEN + 6)

static inline const char *ps_addr_str(uint32_t addr, uint16_t port, char *buf, size_t len)
{
	char ip[INET_ADDRSTRLEN];

	if (!inet_ntop(AF_INET, &addr, ip, sizeof(ip)))
		snprintf(ip, sizeof(ip), "?");
	snprintf(buf, len, "%s:%u", ip, ntohs(port));
	return buf;
}

#endif
