// SPDX-License-Identifier: GPL-2.0
/*
 * The router: publishes route tables into the BPF maps as differences
 * against what is loaded (see router.h for the rules), and picks instances.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "router.h"
#include "util.h"

int router_init(struct router *r, struct datapath *dp, uint32_t drain_ms)
{
	memset(r, 0, sizeof(*r));
	r->dp = dp;
	r->drain_ms = drain_ms;
	r->svc = calloc(PS_MAX_SERVICES, sizeof(*r->svc));
	r->inst = calloc(PS_MAX_INSTANCES, sizeof(*r->inst));
	if (!r->svc || !r->inst) {
		router_free(r);
		return -1;
	}
	return 0;
}

void router_free(struct router *r)
{
	routes_free(&r->rt);
	free(r->rt_id);
	free(r->svc);
	free(r->inst);
	r->rt_id = NULL;
	r->svc = NULL;
	r->inst = NULL;
}

static uint8_t inst_state(const struct router *r, uint32_t slot)
{
	return __atomic_load_n(&r->dp->instances[slot].state, __ATOMIC_ACQUIRE);
}

static void set_state(struct router *r, uint32_t slot, uint8_t state)
{
	__atomic_store_n(&r->dp->instances[slot].state, state, __ATOMIC_RELEASE);
}

/* Fresh per-CPU counters for a slot that is (re)used. */
static void reset_stats(struct router *r, uint32_t slot)
{
	int ncpu = libbpf_num_possible_cpus();
	struct ps_inst_stats *zero;

	if (ncpu <= 0 || r->dp->inst_stats_fd < 0)
		return;
	zero = calloc(ncpu, sizeof(*zero));
	if (zero && bpf_map_update_elem(r->dp->inst_stats_fd, &slot, zero, BPF_ANY))
		pr_warn("cannot reset the counters of instance slot %u: %s", slot, strerror(errno));
	free(zero);
}

/* Free ids and slots are searched from a moving cursor, so a just-released
 * one is the last to be taken again. */
static int alloc_id(struct router *r, uint32_t *cursor, bool *taken)
{
	uint32_t k, id;

	for (k = 0; k < PS_MAX_SERVICES; k++) {
		id = (*cursor + k) % PS_MAX_SERVICES;
		if (!r->svc[id].used && !taken[id]) {
			*cursor = id + 1;
			taken[id] = true;
			return id;
		}
	}
	return -1;
}

static int alloc_slot(struct router *r, uint32_t *cursor, bool *taken)
{
	uint32_t k, slot;

	for (k = 0; k < PS_MAX_INSTANCES; k++) {
		slot = (*cursor + k) % PS_MAX_INSTANCES;
		if (inst_state(r, slot) == PS_INST_FREE && !taken[slot]) {
			*cursor = slot + 1;
			taken[slot] = true;
			return slot;
		}
	}
	return -1;
}

static void drain(struct router *r, uint32_t slot, const char *svc, const char *why)
{
	struct ps_instance *pi = &r->dp->instances[slot];
	char ep[PS_ADDR_STRLEN];

	set_state(r, slot, PS_INST_DRAINING);
	r->inst[slot].drain_deadline = ps_now_ms() + r->drain_ms;
	r->n_draining++;
	pr_info("registry: %s: instance %s %s %s: draining", svc, pi->id,
		ps_addr_str(pi->addr, pi->port, ep, sizeof(ep)), why);
}

/* Where the instances of a new table's service live: kept or new slots. */
struct plan {
	int id;				/* service id */
	const struct route_service *old;	/* same path in the current table, or NULL */
	int slot[PS_SVC_MAX_INST];	/* per new instance: slot, -1 = allocate */
	bool kept[PS_SVC_MAX_INST];	/* per old instance: still there */
};

static bool same_endpoint(const struct router *r, uint32_t slot, const struct route_inst *ri)
{
	const struct ps_instance *pi = &r->dp->instances[slot];

	return pi->addr == ri->addr && pi->port == htons(ri->port) && !strcmp(pi->id, ri->id);
}

int router_update(struct router *r, struct routes *nrt)
{
	struct plan *plan = calloc(nrt->n ? nrt->n : 1, sizeof(*plan));
	bool *id_taken = calloc(PS_MAX_SERVICES, sizeof(bool));
	bool *slot_taken = calloc(PS_MAX_INSTANCES, sizeof(bool));
	bool *old_live = calloc(r->rt.n ? r->rt.n : 1, sizeof(bool));
	uint32_t *new_id = calloc(nrt->n ? nrt->n : 1, sizeof(uint32_t));
	size_t i, j, k;
	int ret = -1;
	char ep[PS_ADDR_STRLEN];

	if (!plan || !id_taken || !slot_taken || !old_live || !new_id) {
		pr_err("registry: out of memory applying a new table");
		goto out;
	}

	/* 1. plan: ids and slots, allocating nothing yet in the maps, so that a
	 *    table that does not fit changes nothing */
	for (i = 0; i < nrt->n; i++) {
		const struct route_service *ns = &nrt->svc[i];
		struct plan *p = &plan[i];

		p->old = routes_lookup(&r->rt, ns->hash, ns->path, ns->path_len);
		if (p->old) {
			p->id = r->rt_id[p->old - r->rt.svc];
			old_live[p->old - r->rt.svc] = true;
		} else if ((p->id = alloc_id(r, &r->id_cursor, id_taken)) < 0) {
			pr_err("registry: more than %d services (live or draining): table not applied",
			       PS_MAX_SERVICES);
			goto out;
		}
		for (k = 0; k < ns->n_inst; k++) {
			p->slot[k] = -1;
			for (j = 0; p->old && j < p->old->n_inst; j++) {
				uint32_t slot = r->svc[p->id].slot[j];

				if (!p->kept[j] && same_endpoint(r, slot, &ns->inst[k])) {
					p->slot[k] = slot;
					p->kept[j] = true;
					break;
				}
			}
			if (p->slot[k] < 0 &&
			    (p->slot[k] = alloc_slot(r, &r->slot_cursor, slot_taken)) < 0) {
				pr_err("registry: more than %d instances (live or draining): "
				       "table not applied", PS_MAX_INSTANCES);
				goto out;
			}
		}
	}

	/* 2. publish each service: new slots first, then the record, then
	 *    drain what it no longer names */
	ret = 0;
	for (i = 0; i < nrt->n; i++) {
		const struct route_service *ns = &nrt->svc[i];
		struct plan *p = &plan[i];
		struct router_service *rs = &r->svc[p->id];
		struct ps_service val = {
			.id = p->id,
			.path_len = ns->path_len,
			.n_inst = ns->n_inst,
		};
		bool changed = !p->old || strcmp(rs->name, ns->name) || rs->n_inst != ns->n_inst;

		for (k = 0; k < ns->n_inst; k++) {
			uint32_t slot = p->slot[k];
			const struct route_inst *ri = &ns->inst[k];

			if (slot_taken[slot]) {
				struct ps_instance *pi = &r->dp->instances[slot];
				uint32_t gen = pi->gen;

				/* a free slot: nothing reads it until the state says UP */
				memset(pi, 0, sizeof(*pi));
				pi->addr = ri->addr;
				pi->port = htons(ri->port);
				pi->service = p->id;
				pi->gen = gen + 1 ? gen + 1 : 1;
				snprintf(pi->id, sizeof(pi->id), "%s", ri->id);
				memset(&r->inst[slot], 0, sizeof(r->inst[slot]));
				reset_stats(r, slot);
				set_state(r, slot, PS_INST_UP);
				if (p->old)
					pr_info("registry: %s %s: instance %s %s added", ns->name,
						ns->path, ri->id,
						ps_addr_str(ri->addr, htons(ri->port), ep, sizeof(ep)));
			}
			if (strcmp(r->inst[slot].check, ri->check)) {
				if (!slot_taken[slot])
					pr_info("registry: %s %s: instance %s: health check %s", ns->name,
						ns->path, ri->id, ri->check[0] ? ri->check : "TCP connect");
				snprintf(r->inst[slot].check, sizeof(r->inst[slot].check), "%s", ri->check);
			}
			if (!p->old || rs->slot[k] != slot)
				changed = true;
			val.inst[k] = slot;
		}
		if (!changed)
			goto drain_removed;
		memcpy(val.path, ns->path, ns->path_len);
		snprintf(val.name, sizeof(val.name), "%s", ns->name);
		if (bpf_map_update_elem(r->dp->services_fd, &ns->hash, &val, BPF_ANY)) {
			pr_err("registry: cannot write service %s to the services map: %s",
			       ns->path, strerror(errno));
			ret = -1;
		}
		if (p->old && strcmp(rs->name, ns->name))
			pr_info("registry: service %s: renamed %s -> %s", ns->path, rs->name, ns->name);
		if (!p->old)
			pr_info("registry: service %s %s added: %zu instance%s", ns->name, ns->path,
				ns->n_inst, ns->n_inst == 1 ? "" : "s");
drain_removed:
		for (j = 0; p->old && j < p->old->n_inst; j++)
			if (!p->kept[j])
				drain(r, rs->slot[j], ns->name, "removed");
		rs->used = rs->live = true;
		snprintf(rs->name, sizeof(rs->name), "%s", ns->name);
		snprintf(rs->path, sizeof(rs->path), "%s", ns->path);
		rs->hash = ns->hash;
		rs->n_inst = ns->n_inst;
		for (k = 0; k < ns->n_inst; k++)
			rs->slot[k] = val.inst[k];
		new_id[i] = p->id;
	}

	/* 3. services gone from the table: out of the map at once */
	for (i = 0; i < r->rt.n; i++) {
		struct router_service *rs = &r->svc[r->rt_id[i]];

		if (old_live[i])
			continue;
		if (bpf_map_delete_elem(r->dp->services_fd, &rs->hash) && errno != ENOENT) {
			pr_err("registry: cannot remove service %s from the services map: %s",
			       rs->path, strerror(errno));
			ret = -1;
		}
		pr_info("registry: service %s %s removed", rs->name, rs->path);
		rs->live = false;
		r->n_retired++;
		for (j = 0; j < rs->n_inst; j++)
			drain(r, rs->slot[j], rs->name, "removed with its service");
		rs->n_inst = 0;
	}

	routes_free(&r->rt);
	free(r->rt_id);
	r->rt = *nrt;
	memset(nrt, 0, sizeof(*nrt));
	r->rt_id = new_id;
	new_id = NULL;
	r->loaded = true;
out:
	free(plan);
	free(id_taken);
	free(slot_taken);
	free(old_live);
	free(new_id);
	return ret;
}

void router_gc(struct router *r, const uint64_t *inst_refs, const uint64_t *svc_refs)
{
	uint32_t i;

	for (i = 0; r->n_draining && i < PS_MAX_INSTANCES; i++) {
		if (inst_state(r, i) != PS_INST_DRAINING || (inst_refs[i / 64] >> (i % 64) & 1))
			continue;
		pr_debug("instance %s (slot %u) drained", r->dp->instances[i].id, i);
		set_state(r, i, PS_INST_FREE);
		r->n_draining--;
	}
	for (i = 0; r->n_retired && i < PS_MAX_SERVICES; i++) {
		if (!r->svc[i].used || r->svc[i].live || (svc_refs[i / 64] >> (i % 64) & 1))
			continue;
		r->svc[i].used = false;
		r->n_retired--;
	}
}

int router_lookup(const struct router *r, uint64_t hash, const uint8_t *path, uint32_t len)
{
	const struct route_service *rs = routes_lookup(&r->rt, hash, (const char *)path, len);

	return rs ? (int)r->rt_id[rs - r->rt.svc] : -1;
}

int router_pick(struct router *r, uint32_t svc, uint64_t *tried, struct backend *out)
{
	const struct router_service *rs;
	uint64_t start;
	uint32_t k;

	if (svc >= PS_MAX_SERVICES || !r->svc[svc].live)
		return -1;
	/* the list router_update() last published, read on its own thread:
	 * no system call per pick (the services map holds the same list) */
	rs = &r->svc[svc];
	start = __atomic_fetch_add(&r->dp->rr[svc], 1, __ATOMIC_RELAXED);
	for (k = 0; k < rs->n_inst && k < PS_SVC_MAX_INST; k++) {
		uint32_t pos = (start + k) % rs->n_inst;
		uint32_t slot = rs->slot[pos];
		const struct ps_instance *pi;

		if (*tried & (1ULL << pos) || slot >= PS_MAX_INSTANCES)
			continue;
		if (inst_state(r, slot) != PS_INST_UP)
			continue;
		pi = &r->dp->instances[slot];
		*tried |= 1ULL << pos;
		out->svc = svc;
		out->inst = slot;
		out->pos = pos;
		memset(&out->addr, 0, sizeof(out->addr));
		out->addr.sin_family = AF_INET;
		out->addr.sin_addr.s_addr = pi->addr;
		out->addr.sin_port = pi->port;
		return 0;
	}
	return -1;
}

bool router_inst_up(const struct router *r, uint32_t slot)
{
	return slot < PS_MAX_INSTANCES && inst_state(r, slot) == PS_INST_UP;
}

bool router_drain_expired(const struct router *r, uint32_t slot, uint64_t now_ms)
{
	return slot < PS_MAX_INSTANCES && inst_state(r, slot) == PS_INST_DRAINING &&
	       now_ms >= r->inst[slot].drain_deadline;
}

const char *router_service_name(const struct router *r, uint32_t svc)
{
	return svc < PS_MAX_SERVICES && r->svc[svc].used ? r->svc[svc].name : "?";
}

const char *router_instance_id(const struct router *r, uint32_t inst)
{
	return inst < PS_MAX_INSTANCES ? r->dp->instances[inst].id : "?";
}
