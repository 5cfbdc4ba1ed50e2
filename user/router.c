// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>

#include "log.h"
#include "router.h"

int router_apply(struct router *r, struct datapath *dp, struct routes *rt)
{
	uint32_t slot = 0;
	size_t i, j;

	memset(r, 0, sizeof(*r));
	r->dp = dp;
	r->rt = *rt;
	memset(rt, 0, sizeof(*rt));
	r->inst_slot = calloc(r->rt.n + 1, sizeof(*r->inst_slot));
	if (!r->inst_slot)
		return -1;

	for (i = 0; i < r->rt.n; i++) {
		const struct route_service *rs = &r->rt.svc[i];
		struct ps_service svc = {
			.id = i,
			.path_len = rs->path_len,
			.n_inst = rs->n_inst,
		};

		if (slot + rs->n_inst > PS_MAX_INSTANCES) {
			pr_err("more than %d instances", PS_MAX_INSTANCES);
			return -1;
		}
		r->inst_slot[i] = slot;
		memcpy(svc.path, rs->path, rs->path_len);
		snprintf(svc.name, sizeof(svc.name), "%s", rs->name);
		for (j = 0; j < rs->n_inst; j++, slot++) {
			struct ps_instance *pi = &dp->instances[slot];

			pi->addr = rs->inst[j].addr;
			pi->port = htons(rs->inst[j].port);
			pi->service = i;
			pi->gen++;
			snprintf(pi->id, sizeof(pi->id), "%s", rs->inst[j].id);
			__atomic_store_n(&pi->state, PS_INST_UP, __ATOMIC_RELEASE);
			svc.inst[j] = slot;
		}
		if (bpf_map_update_elem(dp->services_fd, &rs->hash, &svc, BPF_ANY)) {
			pr_err("cannot write service %s to the services map: %s", rs->path,
			       strerror(errno));
			return -1;
		}
		pr_info("service %s %s: %zu instance%s", rs->name, rs->path, rs->n_inst,
			rs->n_inst == 1 ? "" : "s");
	}
	r->inst_slot[r->rt.n] = slot;
	return 0;
}

void router_free(struct router *r)
{
	routes_free(&r->rt);
	free(r->inst_slot);
	r->inst_slot = NULL;
}

int router_lookup(const struct router *r, uint64_t hash, const uint8_t *path, uint32_t len)
{
	const struct route_service *rs = routes_lookup(&r->rt, hash, (const char *)path, len);

	return rs ? (int)(rs - r->rt.svc) : -1;
}

int router_pick(struct router *r, uint32_t svc, uint64_t *tried, struct backend *out)
{
	const struct route_service *rs;
	struct ps_service val;
	uint64_t start;
	uint32_t k;

	if (svc >= r->rt.n)
		return -1;
	rs = &r->rt.svc[svc];
	/* the instance list as the kernel sees it, in one consistent read */
	if (bpf_map_lookup_elem(r->dp->services_fd, &rs->hash, &val) || val.id != svc)
		return -1;
	start = __atomic_fetch_add(&r->dp->rr[svc], 1, __ATOMIC_RELAXED);
	for (k = 0; k < val.n_inst && k < PS_SVC_MAX_INST; k++) {
		uint32_t pos = (start + k) % val.n_inst;
		uint32_t slot = val.inst[pos];
		const struct ps_instance *pi;

		if (*tried & (1ULL << pos) || slot >= PS_MAX_INSTANCES)
			continue;
		pi = &r->dp->instances[slot];
		if (__atomic_load_n(&pi->state, __ATOMIC_ACQUIRE) != PS_INST_UP)
			continue;
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

const char *router_service_name(const struct router *r, uint32_t svc)
{
	return svc < r->rt.n ? r->rt.svc[svc].name : "?";
}

const char *router_instance_id(const struct router *r, uint32_t inst)
{
	return inst < PS_MAX_INSTANCES ? r->dp->instances[inst].id : "?";
}
