/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The route table of one host: its services, each with its instances, and
 * the longest path-prefix match that picks a service for a request.
 *
 * Matching follows the kernel framer (include/http_frame.h) exactly. The
 * candidate prefixes of a request path are "/", every path[0:i] with
 * path[i] == '/' and i > 0, and the whole path (cut at '?'); the longest
 * candidate that is a service path wins, and candidates of PS_PATH_MAX bytes
 * or more never match. So "/svc" serves "/svc", "/svc/" and "/svc/x", never
 * "/svc2", and a root service "/" serves every path no other service does.
 */
#ifndef PS_ROUTES_H
#define PS_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "pathsplice.h"
#include "registry.h"

struct route_inst {
	char id[PS_NAME_MAX];
	uint32_t addr;			/* IPv4, network order; 127.0.0.1 if the record has none */
	uint16_t port;			/* host order */
	char check[PS_PATH_MAX];	/* health-check request path; "" when none */
};

struct route_service {
	char name[PS_NAME_MAX];
	char path[PS_PATH_MAX];		/* normalised, NUL-terminated */
	uint16_t path_len;
	uint64_t hash;			/* ps_path_hash(path, path_len): the `services` map key */
	size_t n_inst;
	struct route_inst inst[PS_SVC_MAX_INST];	/* in registry order */
};

struct routes {
	struct route_service *svc;	/* in registry order of each path's first instance */
	size_t n;
	/*
	 * Open-addressing index by hash, linear probing: slot (hash & index_mask)
	 * onwards holds svc index + 1, 0 ends the probe. At most half full.
	 */
	uint32_t *index;
	size_t index_mask;
};

/*
 * Build the routes of `host` from the instances whose "host" equals it.
 * `reg` is trusted to be registry_parse() output: instances are grouped by
 * path and a service takes the name of its first instance. Returns 0, or -1
 * with `err` filled and `out` left empty when a service would have more than
 * PS_SVC_MAX_INST instances or the host more than PS_MAX_SERVICES services.
 * No instance for `host` gives an empty table.
 */
int routes_build(const struct registry *reg, const char *host, struct routes *out,
		 char *err, size_t errlen);

/* Release what routes_build() allocated and leave `rt` empty. */
void routes_free(struct routes *rt);

/* 64-bit FNV-1a of a path, as the kernel framer computes it. */
uint64_t ps_path_hash(const char *path, size_t len);

/* The service whose path is exactly path[0:len] (bytes compared), or NULL. */
const struct route_service *routes_lookup(const struct routes *rt, uint64_t hash,
					  const char *path, size_t len);

/*
 * The service a request path routes to: longest whole-segment prefix match
 * over path[0:len], stopping at the first '?'. NULL when no service matches
 * or the path does not start with '/'.
 */
const struct route_service *routes_match(const struct routes *rt, const char *path, size_t len);

#endif /* PS_ROUTES_H */
