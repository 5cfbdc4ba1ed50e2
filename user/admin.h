/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The admin endpoint: a small HTTP server (libmicrohttpd, its own threads)
 * for the tier in front of this host and for operators.
 *
 *   GET /         the endpoints, as JSON
 *   GET /load     {"load": 0.42, "loadavg": [0.9, 0.84, 0.7], "cpus": 2}
 *                 load = 5-minute load average / CPUs online (1.0 = at capacity)
 *   GET /culprit  {"pid": 1234, "user": "www", "command": "python3 app.py", "cpu": 97.5}
 *                 the process that used the most CPU over the last 250 ms (cpu:
 *                 percent of one CPU; this daemon excluded). All null (cpu 0)
 *                 when nothing ran. Measured at most once a second: requests in
 *                 between get the last measurement.
 *   GET /stats    routing state and counters (stats.h), plus what the `extra`
 *                 callback adds
 *   GET /metrics  the same as Prometheus text format 0.0.4
 *
 * HEAD works wherever GET does; other methods get 405, other paths 404, both
 * with a JSON {"error": ...} body. JSON answers are application/json.
 *
 * The listening socket has SO_REUSEPORT, so a second daemon can bind the same
 * address while an upgrade hands over. Connections are capped
 * (ADMIN_MAX_CONNS) and time out after ADMIN_TIMEOUT_S seconds idle.
 */
#ifndef PS_ADMIN_H
#define PS_ADMIN_H

#include <stddef.h>
#include <netinet/in.h>

#include <jansson.h>

#include "stats.h"

#define ADMIN_DEFAULT_ADDR	"127.0.0.1:9180"
#define ADMIN_MAX_CONNS		64
#define ADMIN_TIMEOUT_S		10
#define ADMIN_THREADS		2	/* a /culprit measurement blocks one */
#define ADMIN_CULPRIT_MS	250	/* measuring window */
#define ADMIN_CULPRIT_CACHE_MS	1000	/* a measurement is reused this long */

struct admin;

/*
 * Listen on `addr` and serve from MHD's threads. `maps` is copied; its fds
 * are not owned and must stay open until admin_stop(). `extra` (may be NULL)
 * is called for every /stats answer, on an admin thread, never twice at the
 * same time, with the document's root object: it may add members (daemon
 * state such as registry errors) and must only read data that is safe to
 * read from another thread. Returns NULL with a message in err (e.g. the
 * address is in use) when the server cannot start.
 */
struct admin *admin_start(const struct sockaddr_in *addr, const struct stats_maps *maps,
			  void (*extra)(json_t *root, void *arg), void *arg,
			  char *err, size_t errlen);

/* Stop serving (waits for requests in progress) and free. NULL is a no-op. */
void admin_stop(struct admin *a);

#endif
