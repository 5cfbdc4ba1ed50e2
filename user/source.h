/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Registry sources: where the registry comes from, chosen by the spec given
 * to --registry:
 *
 *   /path/to/registry.json        a file, re-read when it changes (inotify;
 *                                 in-place writes and write-and-rename)
 *   http://host:port/path         polled every poll_ms with conditional
 *   https://...                   requests (ETag / If-None-Match)
 *   etcd://host:port/prefix       etcd v3 through its JSON gateway: a range
 *                                 read of the prefix, then a watch; every key
 *                                 under the prefix is one instance record
 *
 * Every source delivers whole registries: the controller diffs them against
 * what is loaded. A source never delivers a registry it could not fully
 * validate; on failure the caller keeps the last good one. Sources retry by
 * themselves, with backoff (from 250 ms, doubling, at most 5 s), and the
 * first good read after a failure is delivered at once, as SRC_UPDATE even
 * when it is unchanged (so that the caller sees the recovery).
 *
 * A source is used by one thread at a time. source_wait() blocks for at most
 * about max_wait_ms and returns early when *stop becomes non-zero, so the
 * thread that owns it can always be stopped promptly.
 */
#ifndef PS_SOURCE_H
#define PS_SOURCE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

struct source_opts {
	uint32_t poll_ms;		/* HTTP poll interval (default 2000) */
	uint32_t timeout_ms;		/* one HTTP request / etcd connect (default 5000) */
	volatile sig_atomic_t *stop;	/* NULL: never stopped early */
};

enum source_result {
	SRC_ERROR = -1,			/* a read failed: err says why; last state stays */
	SRC_SAME = 0,			/* nothing new (timeout, unchanged, stopped) */
	SRC_UPDATE = 1,			/* *out holds a new registry; the caller frees it */
};

struct source;

/*
 * Open a source. Fails (NULL, err filled) only for a spec that cannot work
 * (unknown scheme, bad URL); an unreachable registry is not an open error.
 */
struct source *source_open(const char *spec, const struct source_opts *opts,
			   char *err, size_t errlen);

/*
 * Wait up to max_wait_ms for the registry to change. The first call after
 * source_open() reads the whole registry at once (taking up to timeout_ms,
 * whatever max_wait_ms) and returns SRC_UPDATE or SRC_ERROR. After an
 * SRC_ERROR the source retries when its backoff allows.
 * On SRC_UPDATE *out is a fresh registry (registry_parse() output; the caller
 * frees it with registry_free()). On SRC_ERROR `err` names the source, and
 * the record and field when one is at fault.
 */
enum source_result source_wait(struct source *s, uint32_t max_wait_ms, struct registry *out,
			       char *err, size_t errlen);

/* The spec the source was opened with, for log lines. */
const char *source_name(const struct source *s);

/* Read failures so far: source_wait() counts each SRC_ERROR; an
 * implementation counts only what it skips on its own (a bad etcd key). */
uint64_t source_errors(const struct source *s);

void source_close(struct source *s);

/* ---- the implementations, dispatched by source_open() --------------------- */

/*
 * Each implementation embeds `struct source` first and fills in its ops.
 */
struct source_ops {
	enum source_result (*wait)(struct source *s, uint32_t max_wait_ms, struct registry *out,
				   char *err, size_t errlen);
	void (*close)(struct source *s);
};

struct source {
	const struct source_ops *ops;
	struct source_opts opts;
	char name[512];
	uint64_t errors;
};

struct source *source_file_open(const char *path, const struct source_opts *opts,
				char *err, size_t errlen);
struct source *source_http_open(const char *url, const struct source_opts *opts,
				char *err, size_t errlen);
struct source *source_etcd_open(const char *spec, const struct source_opts *opts,
				char *err, size_t errlen);

/* For implementations: true once *opts.stop is set. */
static inline int source_stopping(const struct source *s)
{
	return s->opts.stop && *s->opts.stop;
}

#endif /* PS_SOURCE_H */
