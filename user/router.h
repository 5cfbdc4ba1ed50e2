/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The routing state the data path reads, and its only writer.
 *
 * The router publishes the route table of this host into the `services` and
 * `instances` maps and keeps them in step with every new table the
 * controller hands it, touching only the entries that changed:
 *
 * - A service keeps its id (index of `rr`, value of ps_conn.service) for as
 *   long as its path is in the registry; an instance keeps its slot (index of
 *   `instances`) for as long as its id, address and port stay the same, and
 *   with it its health state and counters.
 * - A service record, instance list included, is replaced by one map update,
 *   written after the instance slots it names: the kernel and the proxy
 *   never see a half-written or empty list.
 * - A removed instance is DRAINING: no new connection goes to it, and a
 *   request that starts on a connection to it is re-routed (the kernel hands
 *   it back); connections busy with it finish, until the drain timeout
 *   closes them. Its slot is reused only once no connection refers to it.
 * - A removed service disappears from the map at once; its id is reused only
 *   once no connection refers to it, so a connection still bound to the old
 *   id can never be taken for a connection of the new service.
 *
 * Everything here runs on the proxy's thread.
 */
#ifndef PS_ROUTER_H
#define PS_ROUTER_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>

#include "datapath.h"
#include "routes.h"

/* A service id's userspace state. */
struct router_service {
	bool used;			/* the id is taken (live, or still referenced) */
	bool live;			/* in the current route table */
	char name[PS_NAME_MAX];
	char path[PS_PATH_MAX];
	uint64_t hash;
	uint32_t n_inst;
	uint32_t slot[PS_SVC_MAX_INST];	/* instance slots, in registry order */
};

/* An instance slot's userspace state (the map entry holds the rest). */
struct router_inst {
	char check[PS_PATH_MAX];	/* health-check path, "" for a TCP connect */
	uint64_t drain_deadline;	/* CLOCK_MONOTONIC ms; while DRAINING */
};

struct router {
	struct datapath *dp;
	struct routes rt;		/* the current table, for matching */
	uint32_t *rt_id;		/* per rt.svc index: its service id */
	struct router_service *svc;	/* [PS_MAX_SERVICES], by id */
	struct router_inst *inst;	/* [PS_MAX_INSTANCES], by slot */
	uint32_t drain_ms;
	uint32_t n_draining;		/* slots in DRAINING state */
	uint32_t n_retired;		/* removed service ids not yet reusable */
	uint32_t id_cursor, slot_cursor;	/* where the next free id / slot is searched */
	bool loaded;			/* a registry has been applied */
};

/* A chosen instance. */
struct backend {
	uint32_t svc;			/* service id */
	uint32_t inst;			/* instance slot */
	uint32_t pos;			/* position in the service's instance list */
	struct sockaddr_in addr;
};

int router_init(struct router *r, struct datapath *dp, uint32_t drain_ms);
void router_free(struct router *r);

/*
 * Make `rt` (taken over by the router; left empty) the route table: update
 * only the map entries that differ, log one line per change. Returns 0, or
 * -1 when the maps could not be written (the earlier state stays).
 */
int router_update(struct router *r, struct routes *rt);

/* Service id of the exact service path path[0..len), or -1. */
int router_lookup(const struct router *r, uint64_t hash, const uint8_t *path, uint32_t len);

/* Next instance of `svc` in round-robin order that is up and not in *tried
 * (a bitmask of list positions, updated). Returns 0, or -1 when none is left. */
int router_pick(struct router *r, uint32_t svc, uint64_t *tried, struct backend *out);

/* Is the instance in `slot` up (may it take a new request)? */
bool router_inst_up(const struct router *r, uint32_t slot);

/* Has the slot been draining for longer than the drain timeout? */
bool router_drain_expired(const struct router *r, uint32_t slot, uint64_t now_ms);

/*
 * Release what no connection refers to any more: draining slots not set in
 * `inst_refs` become free, removed service ids not set in `svc_refs` become
 * reusable. Bitmaps of PS_MAX_INSTANCES and PS_MAX_SERVICES bits.
 */
void router_gc(struct router *r, const uint64_t *inst_refs, const uint64_t *svc_refs);

const char *router_service_name(const struct router *r, uint32_t svc);
const char *router_instance_id(const struct router *r, uint32_t inst);

#endif
