/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Health of the instances: active checks and passive detection.
 *
 * Every instance that is up or down is checked every `interval`: a TCP
 * connect, or an HTTP GET of the record's "check" path that must answer 2xx
 * or 3xx, each within `timeout`. `fall` failures in a row take an up
 * instance down, `rise` successes in a row bring a down one back (HAProxy's
 * inter / fall / rise). First checks are spread over one interval, so a
 * hundred instances are not checked in the same millisecond.
 *
 * The data path reports what it sees: a connect refused or timed out takes
 * the instance down at once (the request goes to the next instance); only the
 * active checks bring it back.
 *
 * The state, the reason of the last change and the counters live in the
 * instance's entry of the `instances` map (struct ps_instance), where the
 * router and the verdict read the state and `bpftool map dump` shows all of
 * it. Checks are non-blocking sockets in the health module's own epoll set,
 * which the proxy's loop watches (proxy_add_hook()): they run on the proxy's
 * thread, never block it, and never race with the router.
 */
#ifndef PS_HEALTH_H
#define PS_HEALTH_H

#include <stdint.h>

#include "pathsplice.h"
#include "router.h"

struct health_opts {
	uint32_t interval_ms;		/* default 2000 */
	uint32_t timeout_ms;		/* default 2000 */
	uint32_t fall;			/* default 3 */
	uint32_t rise;			/* default 2 */
};

struct health;

struct health *health_new(struct router *r, const struct health_opts *opts);
void health_free(struct health *h);

/* Readable when a check needs attention: give it to proxy_add_hook() with
 * health_run() as the callback. */
int health_fd(const struct health *h);
void health_run(void *h);

/* The data path could not connect to the instance in `slot`. */
void health_passive(struct health *h, uint32_t slot, enum ps_check_reason why);

/* "connection refused", "timeout", "HTTP 500", ... for logs and status. */
const char *health_reason_str(const struct ps_instance *pi, char *buf, size_t len);

#endif
