/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The controller: follows a registry source on its own thread and hands
 * each new route table of this host to the proxy's thread, which applies it
 * (router_update()). Reading a registry (a slow HTTP server, an etcd watch)
 * therefore never blocks the data path, and the router keeps a single
 * writer.
 *
 * Only tables that were read, validated and built completely are handed
 * over: a failed read keeps the last good table in place, is logged with its
 * reason (once per distinct reason, then again when it recovers) and counted.
 */
#ifndef PS_CONTROLLER_H
#define PS_CONTROLLER_H

#include <stdbool.h>
#include <stdint.h>

#include "routes.h"
#include "source.h"

struct controller;

struct controller_stats {
	uint64_t tables;		/* tables handed over */
	uint64_t errors;		/* failed reads, records skipped, tables not built */
};

/* Open the source of `spec` for the instances of `host`. NULL on a spec that
 * cannot work (err filled); an unreachable registry is not an error here. */
struct controller *controller_new(const char *spec, const char *host,
				  const struct source_opts *opts, char *err, size_t errlen);

/*
 * Read the registry once, now, on the calling thread: 0 with the table in
 * *rt, or -1 with the reason in err. Call before controller_start().
 */
int controller_read(struct controller *ctl, struct routes *rt, char *err, size_t errlen);

/* Follow the source on a thread from now on. */
int controller_start(struct controller *ctl);

/* Read the whole registry again, soon (within half a second). Only sets a
 * flag: safe in a signal handler. */
void controller_reload(struct controller *ctl);

/* Readable (an eventfd) while a new table waits for controller_take(). */
int controller_fd(const struct controller *ctl);

/* The newest table not yet taken, into *rt: true, or false when none. */
bool controller_take(struct controller *ctl, struct routes *rt);

struct controller_stats controller_stats(const struct controller *ctl);
const char *controller_source(const struct controller *ctl);

/* Stop the thread and free everything. */
void controller_free(struct controller *ctl);

#endif
