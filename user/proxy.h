/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The proxy: accepts client connections, reads the head of each new request,
 * connects to an instance of its service and splices the two sockets in the
 * kernel. Whatever the kernel hands back (another service, an upgrade,
 * framing it does not take, a congested peer, a half-closed client) is
 * relayed here, message by message, until the kernel can take over again.
 */
#ifndef PS_PROXY_H
#define PS_PROXY_H

#include <signal.h>
#include <stdint.h>
#include <netinet/in.h>

#include "datapath.h"
#include "router.h"

struct proxy_opts {
	struct sockaddr_in listen;
	uint32_t head_max;		/* request head limit (431 beyond) */
	uint32_t resp_head_max;		/* response head limit */
	uint32_t head_timeout_ms;	/* 408 when a head takes longer */
	uint32_t connect_timeout_ms;	/* to an instance, before trying the next */
	uint32_t fin_timeout_ms;	/* a half-closed connection's other half */
	uint32_t idle_timeout_ms;	/* a keep-alive connection idle between exchanges; 0: none */
	uint32_t response_timeout_ms;	/* a whole request with no byte of its answer: 504; 0: none */
	uint32_t linger_ms;		/* reading after an error answer, before close */
	uint32_t drain_ms;		/* after a stop, time connections get to finish */
	int listen_fd;			/* a listening socket taken over, or -1: bind `listen` */
};

/* The statuses of the daemon's own (error) answers. */
#define PROXY_ANSWER_KINDS	10
extern const uint16_t proxy_answer_status[PROXY_ANSWER_KINDS];

struct proxy_stats {
	uint64_t accepted;
	uint64_t spliced;		/* connections whose sockets entered the sockhash */
	uint64_t relayed;		/* connections relayed in userspace only (e.g. half-closed) */
	uint64_t reused;		/* one-shot requests sent on a kept instance connection */
	uint64_t handbacks;
	uint64_t reroutes;		/* keep-alive connections moved to another service */
	uint64_t reconnects;		/* client connections kept when their instance closed */
	uint64_t idle_closed;		/* keep-alive connections closed idle (--idle-timeout, drain) */
	uint64_t response_timeouts;	/* 504s for --response-timeout */
	uint64_t stalls_closed;		/* exchanges closed with nothing moving for --idle-timeout */
	uint64_t answers[PROXY_ANSWER_KINDS];	/* error answers, by proxy_answer_status[] */
	uint64_t connect_failures;
};

struct proxy;

struct proxy *proxy_new(const struct proxy_opts *opts, struct datapath *dp, struct router *rt);
/*
 * Serve until *stop becomes non-zero, then stop accepting and let the open
 * connections finish, for at most drain_ms (or until *stop reaches 2).
 * Returns 0, or -1 on a fatal error.
 */
int proxy_run(struct proxy *px, volatile sig_atomic_t *stop);
const struct proxy_stats *proxy_stats(const struct proxy *px);
/* The listening socket (for a hand-over to a new daemon), -1 once closed. */
int proxy_listen_fd(const struct proxy *px);
struct health;
/* Tell `h` when a connect to an instance fails. */
void proxy_set_health(struct proxy *px, struct health *h);
/* Call cb(arg) on the proxy's thread whenever fd is readable. */
int proxy_add_hook(struct proxy *px, int fd, void (*cb)(void *arg), void *arg);
void proxy_free(struct proxy *px);

#endif
