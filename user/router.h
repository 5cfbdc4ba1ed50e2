/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The routing state the data path reads: the route table of this host,
 * written into the `services` and `instances` maps, and the choice of an
 * instance for a routed request (round-robin position in the `rr` map,
 * instance states in the `instances` map).
 */
#ifndef PS_ROUTER_H
#define PS_ROUTER_H

#include <stdint.h>
#include <netinet/in.h>

#include "datapath.h"
#include "routes.h"

struct router {
	struct datapath *dp;
	struct routes rt;		/* what the maps hold */
	uint32_t *inst_slot;		/* per service: first instance slot, instances contiguous */
};

/* A chosen instance. */
struct backend {
	uint32_t svc;			/* service id */
	uint32_t inst;			/* instance slot */
	uint32_t pos;			/* position in the service's instance list */
	struct sockaddr_in addr;
};

/* Publish `rt` (taken over by the router) into the maps. */
int router_apply(struct router *r, struct datapath *dp, struct routes *rt);
void router_free(struct router *r);

/* Service id of the exact service path path[0..len), or -1. */
int router_lookup(const struct router *r, uint64_t hash, const uint8_t *path, uint32_t len);

/* Next instance of `svc` in round-robin order that is up and not in *tried
 * (a bitmask of list positions, updated). Returns 0, or -1 when none is left. */
int router_pick(struct router *r, uint32_t svc, uint64_t *tried, struct backend *out);

const char *router_service_name(const struct router *r, uint32_t svc);
const char *router_instance_id(const struct router *r, uint32_t inst);

#endif
