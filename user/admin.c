// SPDX-License-Identifier: GPL-2.0
/*
 * The admin endpoint (see admin.h): libmicrohttpd with an internal pool of
 * ADMIN_THREADS polling threads, GET/HEAD only, every answer built whole in
 * memory from bounded work (one map walk, one /proc scan), so a client can
 * neither crash it nor make it work without limit.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <microhttpd.h>

#include "admin.h"
#include "log.h"
#include "procstat.h"
#include "stats.h"
#include "util.h"

#ifndef PS_VERSION
#define PS_VERSION "dev"
#endif

#define CT_JSON		"application/json"
#define CT_METRICS	"text/plain; version=0.0.4; charset=utf-8"
#define JSON_FLAGS	(JSON_INDENT(2) | JSON_REAL_PRECISION(6))

struct admin {
	struct MHD_Daemon *mhd;
	struct stats_maps maps;
	void (*extra)(json_t *root, void *arg);
	void *arg;
	char where[32];			/* "ADDR:PORT", for messages */

	pthread_mutex_t stats_lock;	/* one stats_collect + extra at a time */

	pthread_mutex_t culprit_lock;	/* one measurement at a time; guards below */
	bool have_culprit;
	uint64_t culprit_at_ms;		/* CLOCK_MONOTONIC when it was measured */
	int culprit_err;
	struct culprit culprit;

	pthread_mutex_t log_lock;	/* guards the start-up message below */
	bool starting;
	char start_msg[256];		/* MHD's first complaint while starting */
};

/* MHD's messages: kept for admin_start()'s error while starting, logged after. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct admin *a = cls;
	char msg[256], *html;
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* MHD quotes the HTML of its error pages: the status code says enough */
	if ((html = strstr(msg, " ('<")))
		snprintf(html, sizeof(msg) - (size_t)(html - msg), ")");
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '.'))
		msg[--n] = '\0';
	pthread_mutex_lock(&a->log_lock);
	if (a->starting) {
		if (!a->start_msg[0])
			snprintf(a->start_msg, sizeof(a->start_msg), "%s", msg);
		pthread_mutex_unlock(&a->log_lock);
		return;
	}
	pthread_mutex_unlock(&a->log_lock);
	pr_info("admin %s: %s", a->where, msg);
}

/* ---- answers -------------------------------------------------------------- */

/* Queue `body` (malloc'd, taken over) as the answer. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *type,
			     char *body, size_t len, bool allow_header)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
	    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
	    (allow_header && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Answer with a JSON document (a new reference, taken over; NULL means out of
 * memory). */
static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned int status, json_t *j,
				  bool allow_header)
{
	char *text = j ? json_dumps(j, JSON_FLAGS) : NULL;
	size_t len;

	json_decref(j);
	if (!text) {
		static const char oom[] = "{\"error\": \"out of memory\"}\n";

		text = strdup(oom);
		if (!text)
			return MHD_NO;
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	len = strlen(text);
	/* a final newline, for curl on a terminal */
	{
		char *nl = realloc(text, len + 2);

		if (nl) {
			text = nl;
			text[len++] = '\n';
			text[len] = '\0';
		}
	}
	return reply(conn, status, CT_JSON, text, len, allow_header);
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned int status,
				   const char *msg, bool allow_header)
{
	return reply_json(conn, status, json_pack("{s:s}", "error", msg), allow_header);
}

/* ---- endpoints -------------------------------------------------------------- */

static enum MHD_Result get_index(struct admin *a, struct MHD_Connection *conn)
{
	return reply_json(conn, MHD_HTTP_OK,
			  json_pack("{s:s, s:{s:s, s:s, s:s, s:s}}", "version", PS_VERSION,
				    "endpoints",
				    "/load", "5-minute load average per CPU (1.0 = at capacity)",
				    "/culprit", "the process using the most CPU now",
				    "/stats", "services, instances, health and counters (JSON)",
				    "/metrics", "the same in Prometheus text format"),
			  false);
}

/* v (>= 0, not huge) to the nearest multiple of unit, without libm */
static double round_to(double v, double unit)
{
	return v >= 0 && v < 1e15 ? (double)(long long)(v / unit + 0.5) * unit : v;
}

static enum MHD_Result get_load(struct admin *a, struct MHD_Connection *conn)
{
	struct host_load l;
	char msg[128];
	int err = procstat_load(&l);

	if (err) {
		snprintf(msg, sizeof(msg), "cannot read /proc/loadavg: %s", strerror(-err));
		return reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, false);
	}
	return reply_json(conn, MHD_HTTP_OK,
			  json_pack("{s:f, s:[f,f,f], s:I}", "load", round_to(l.load, 0.0001),
				    "loadavg", l.loadavg[0], l.loadavg[1], l.loadavg[2],
				    "cpus", (json_int_t)l.cpus),
			  false);
}

static enum MHD_Result get_culprit(struct admin *a, struct MHD_Connection *conn)
{
	struct culprit c;
	char msg[128];
	int err;
	json_t *j;

	/* concurrent requests wait for one measurement and share it */
	pthread_mutex_lock(&a->culprit_lock);
	if (!a->have_culprit || ps_now_ms() - a->culprit_at_ms >= ADMIN_CULPRIT_CACHE_MS) {
		a->culprit_err = procstat_culprit(ADMIN_CULPRIT_MS, getpid(), &a->culprit);
		a->culprit_at_ms = ps_now_ms();
		a->have_culprit = true;
	}
	err = a->culprit_err;
	c = a->culprit;
	pthread_mutex_unlock(&a->culprit_lock);

	if (err) {
		snprintf(msg, sizeof(msg), "cannot read /proc: %s", strerror(-err));
		return reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, false);
	}
	if (!c.found)
		return reply_json(conn, MHD_HTTP_OK,
				  json_pack("{s:n, s:n, s:n, s:f}", "pid", "user", "command",
					    "cpu", 0.0),
				  false);
	j = json_pack("{s:I, s:o, s:o, s:f}", "pid", (json_int_t)c.pid,
		      "user", stats_json_string(c.user, sizeof(c.user)),
		      "command", stats_json_string(c.command, sizeof(c.command)),
		      "cpu", round_to(c.cpu, 0.1));
	return reply_json(conn, MHD_HTTP_OK, j, false);
}

/* The stats document with the daemon's own counters, or NULL after answering
 * the error. */
static json_t *collect(struct admin *a, struct MHD_Connection *conn, enum MHD_Result *ret)
{
	char msg[160];
	json_t *root;
	int err;

	pthread_mutex_lock(&a->stats_lock);
	root = stats_collect(&a->maps);
	err = errno;
	if (root && a->extra)
		a->extra(root, a->arg);
	pthread_mutex_unlock(&a->stats_lock);
	if (!root) {
		snprintf(msg, sizeof(msg), "cannot read the BPF maps: %s",
			 err == EPROTO ? "unexpected map layout" : strerror(err));
		*ret = reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, false);
	}
	return root;
}

static enum MHD_Result get_stats(struct admin *a, struct MHD_Connection *conn)
{
	enum MHD_Result ret = MHD_NO;
	json_t *root = collect(a, conn, &ret);

	return root ? reply_json(conn, MHD_HTTP_OK, root, false) : ret;
}

static enum MHD_Result get_metrics(struct admin *a, struct MHD_Connection *conn)
{
	enum MHD_Result ret = MHD_NO;
	json_t *root = collect(a, conn, &ret);
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (!root)
		return ret;
	rc = stats_to_prometheus(root, &text, &len);
	json_decref(root);
	if (rc)
		return reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory", false);
	return reply(conn, MHD_HTTP_OK, CT_METRICS, text, len, false);
}

static const struct {
	const char *path;
	enum MHD_Result (*fn)(struct admin *a, struct MHD_Connection *conn);
} routes[] = {
	{ "/", get_index },
	{ "/load", get_load },
	{ "/culprit", get_culprit },
	{ "/stats", get_stats },
	{ "/metrics", get_metrics },
};

/*
 * MHD's access handler. The first call only sees the request head; the
 * answer is queued on the second, once the (empty) body is in: answering on
 * the first call would make MHD close the connection rather than keep it
 * alive. A body is read and dropped (MHD bounds what it buffers, and the
 * connection timeout bounds a client that keeps sending).
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **req_cls)
{
	static int seen;
	struct admin *a = cls;
	size_t i;

	if (!*req_cls) {
		*req_cls = &seen;
		return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
				   "method not allowed: use GET or HEAD", true);
	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (url && !strcmp(url, routes[i].path))
			return routes[i].fn(a, conn);
	return reply_error(conn, MHD_HTTP_NOT_FOUND,
			   "no such endpoint: try /, /load, /culprit, /stats or /metrics", false);
}

/* ---- start and stop --------------------------------------------------------- */

static void admin_free(struct admin *a)
{
	pthread_mutex_destroy(&a->stats_lock);
	pthread_mutex_destroy(&a->culprit_lock);
	pthread_mutex_destroy(&a->log_lock);
	free(a);
}

struct admin *admin_start(const struct sockaddr_in *addr, const struct stats_maps *maps,
			  void (*extra)(json_t *root, void *arg), void *arg,
			  char *err, size_t errlen)
{
	struct admin *a = calloc(1, sizeof(*a));

	if (!a) {
		snprintf(err, errlen, "admin endpoint: out of memory");
		return NULL;
	}
	pthread_mutex_init(&a->stats_lock, NULL);
	pthread_mutex_init(&a->culprit_lock, NULL);
	pthread_mutex_init(&a->log_lock, NULL);
	a->maps = *maps;
	a->extra = extra;
	a->arg = arg;
	ps_addr_str(addr->sin_addr.s_addr, addr->sin_port, a->where, sizeof(a->where));
	a->starting = true;

	a->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
				  MHD_USE_ERROR_LOG,
				  ntohs(addr->sin_port), NULL, NULL, on_request, a,
				  MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
				  MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)addr,
				  MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
				  MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)ADMIN_THREADS,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ADMIN_MAX_CONNS,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ADMIN_TIMEOUT_S,
				  MHD_OPTION_END);

	pthread_mutex_lock(&a->log_lock);
	a->starting = false;
	pthread_mutex_unlock(&a->log_lock);
	if (!a->mhd) {
		snprintf(err, errlen, "admin endpoint %s: %s", a->where,
			 a->start_msg[0] ? a->start_msg : "cannot start the HTTP server");
		admin_free(a);
		return NULL;
	}
	return a;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->mhd);
	admin_free(a);
}
