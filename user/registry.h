/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The service registry: which instances run where.
 *
 * Every registry source (file, HTTP, etcd) ends up as JSON text handed to
 * registry_parse(), the one place a registry is validated. A document is
 *
 *   {"instances": [record, ...]}   or   [record, ...]
 *
 * and a record is
 *
 *   {"id": "a1", "name": "service1", "path": "/service1", "host": "web-1",
 *    "port": 8001, "address": "127.0.0.2", "check": "/healthz"}
 *
 * with "address" and "check" optional and unknown fields ignored. Errors name
 * the source, the record ("instance #N", counted from 1, and its id when
 * known), the field and the reason, e.g.
 *
 *   registry.json: instance #3 (id "a3"): field "port": expected an integer
 *   1..65535, got "80a"
 */
#ifndef PS_REGISTRY_H
#define PS_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "pathsplice.h"

#define REG_MAX_BYTES	(16u << 20)	/* largest registry document accepted */

struct reg_instance {
	char id[PS_NAME_MAX];		/* unique across the document */
	char name[PS_NAME_MAX];		/* service name */
	char path[PS_PATH_MAX];		/* service path, normalised: no trailing '/' except "/" */
	char host[PS_NAME_MAX];		/* host the instance runs on */
	char check[PS_PATH_MAX];	/* health-check request path; "" when absent */
	uint32_t addr;			/* IPv4, network order; 0 when "address" is absent */
	uint16_t port;			/* host order */
};

struct registry {
	struct reg_instance *inst;	/* in document order; NULL when n == 0 */
	size_t n;
};

/*
 * Parse and validate a registry document of `len` bytes (no NUL needed).
 * `source` names it in errors (file path or URL). On success returns 0 and
 * fills `out`; on error returns -1, writes the reason to `err` and leaves
 * `out` empty. `out` is overwritten, never freed: parse into a fresh struct
 * and swap it in on success so the last good registry stays in place.
 */
int registry_parse(const char *text, size_t len, const char *source,
		   struct registry *out, char *err, size_t errlen);

/* registry_parse() of a whole file, at most REG_MAX_BYTES; errors name `path`. */
int registry_load_file(const char *path, struct registry *out, char *err, size_t errlen);

/* Release what registry_parse() allocated and leave `reg` empty. */
void registry_free(struct registry *reg);

#endif /* PS_REGISTRY_H */
