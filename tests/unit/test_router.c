// SPDX-License-Identifier: GPL-2.0
/*
 * The router's live updates, against the real maps: every test loads the
 * data path (BPF object, maps, pins in a private pin dir) and applies route
 * tables one after another, checking what the `services` and `instances`
 * maps hold. Needs root (or CAP_BPF + CAP_NET_ADMIN); skipped otherwise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>

#include "../../user/datapath.h"
#include "../../user/log.h"
#include "../../user/registry.h"
#include "../../user/router.h"
#include "../../user/routes.h"

struct fixture {
	struct datapath dp;
	struct router r;
	char pin_dir[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct datapath_opts o = { .max_conns = 64, .fc_limit = 1 << 20 };

	if (!f)
		return -1;
	snprintf(f->pin_dir, sizeof(f->pin_dir), "/sys/fs/bpf/pstest-router-%d", (int)getpid());
	o.pin_dir = f->pin_dir;
	log_threshold = LOG_ERROR;
	*state = NULL;
	if (geteuid() != 0) {
		free(f);
		return 0;
	}
	if (datapath_open(&f->dp, &o)) {
		datapath_close(&f->dp);
		free(f);
		return 0;
	}
	assert_int_equal(router_init(&f->r, &f->dp, 30000), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (!f)
		return 0;
	router_free(&f->r);
	datapath_close(&f->dp);
	free(f);
	return 0;
}

#define FIXTURE(state)						\
	({							\
		struct fixture *f_ = *(state);			\
		if (!f_)					\
			skip();	/* no privilege to load BPF */	\
		f_;						\
	})

/* Apply a registry document (host "h") as the next table. */
static void apply(struct fixture *f, const char *json)
{
	struct registry reg = { 0 };
	struct routes rt = { 0 };
	char err[512];

	if (registry_parse(json, strlen(json), "test", &reg, err, sizeof(err)))
		fail_msg("registry: %s", err);
	if (routes_build(&reg, "h", &rt, err, sizeof(err)))
		fail_msg("routes: %s", err);
	registry_free(&reg);
	assert_int_equal(router_update(&f->r, &rt), 0);
	routes_free(&rt);
}

static int svc_id(struct fixture *f, const char *path)
{
	return router_lookup(&f->r, ps_path_hash(path, strlen(path)), (const uint8_t *)path,
			     strlen(path));
}

/* The service record in the kernel's map; false when it is not there. */
static bool map_service(struct fixture *f, const char *path, struct ps_service *out)
{
	uint64_t h = ps_path_hash(path, strlen(path));

	return bpf_map_lookup_elem(f->dp.services_fd, &h, out) == 0;
}

/* The slot of instance `id` of the service at `path`, from the map record. */
static int slot_of(struct fixture *f, const char *path, const char *id)
{
	struct ps_service s;
	uint32_t k;

	if (!map_service(f, path, &s))
		return -1;
	for (k = 0; k < s.n_inst; k++)
		if (!strcmp(f->dp.instances[s.inst[k]].id, id))
			return s.inst[k];
	return -1;
}

static uint8_t state_of(struct fixture *f, int slot)
{
	return f->dp.instances[slot].state;
}

#define REC(id, name, path, port) \
	"{\"id\":\"" id "\",\"name\":\"" name "\",\"path\":\"" path "\",\"host\":\"h\",\"port\":" port "}"

static void test_kept_instances_keep_their_slots(void **state)
{
	struct fixture *f = FIXTURE(state);
	struct ps_service s;
	int a, b;

	apply(f, "[" REC("a", "s", "/s", "8001") "," REC("b", "s", "/s", "8002") "]");
	a = slot_of(f, "/s", "a");
	b = slot_of(f, "/s", "b");
	assert_true(a >= 0 && b >= 0 && a != b);
	f->dp.instances[b].transitions = 7;	/* state that must survive */

	apply(f, "[" REC("a", "s", "/s", "8001") "," REC("b", "s", "/s", "8002") ","
	      REC("c", "s", "/s", "8003") "]");
	assert_int_equal(slot_of(f, "/s", "a"), a);
	assert_int_equal(slot_of(f, "/s", "b"), b);
	assert_int_equal(f->dp.instances[b].transitions, 7);
	assert_true(map_service(f, "/s", &s));
	assert_int_equal(s.n_inst, 3);
	assert_int_equal(state_of(f, slot_of(f, "/s", "c")), PS_INST_UP);
	assert_int_equal(ntohs(f->dp.instances[slot_of(f, "/s", "c")].port), 8003);
}

static void test_removed_instance_drains_until_nothing_refers_to_it(void **state)
{
	struct fixture *f = FIXTURE(state);
	uint64_t inst_refs[PS_MAX_INSTANCES / 64] = { 0 }, svc_refs[PS_MAX_SERVICES / 64] = { 0 };
	struct ps_service s;
	int b;

	apply(f, "[" REC("a", "s", "/s", "8001") "," REC("b", "s", "/s", "8002") "]");
	b = slot_of(f, "/s", "b");
	apply(f, "[" REC("a", "s", "/s", "8001") "]");
	assert_true(map_service(f, "/s", &s));
	assert_int_equal(s.n_inst, 1);
	assert_int_equal(state_of(f, b), PS_INST_DRAINING);
	assert_false(router_inst_up(&f->r, b));
	assert_int_equal(f->r.n_draining, 1);

	inst_refs[b / 64] |= 1ULL << (b % 64);	/* a connection still uses it */
	router_gc(&f->r, inst_refs, svc_refs);
	assert_int_equal(state_of(f, b), PS_INST_DRAINING);
	memset(inst_refs, 0, sizeof(inst_refs));
	router_gc(&f->r, inst_refs, svc_refs);
	assert_int_equal(state_of(f, b), PS_INST_FREE);
	assert_int_equal(f->r.n_draining, 0);
	assert_false(router_drain_expired(&f->r, b, UINT64_MAX));
}

static void test_removed_service_leaves_the_map_at_once_and_its_id_waits(void **state)
{
	struct fixture *f = FIXTURE(state);
	uint64_t inst_refs[PS_MAX_INSTANCES / 64] = { 0 }, svc_refs[PS_MAX_SERVICES / 64] = { 0 };
	struct ps_service s;
	int gone, x, i;

	apply(f, "[" REC("a", "s", "/s", "8001") "," REC("x", "t", "/t", "8009") "]");
	gone = svc_id(f, "/t");
	x = slot_of(f, "/t", "x");
	assert_true(gone >= 0);
	apply(f, "[" REC("a", "s", "/s", "8001") "]");
	assert_false(map_service(f, "/t", &s));
	assert_int_equal(svc_id(f, "/t"), -1);
	assert_int_equal(state_of(f, x), PS_INST_DRAINING);

	/* while a connection is bound to the old id, no new service gets it */
	svc_refs[gone / 64] |= 1ULL << (gone % 64);
	router_gc(&f->r, inst_refs, svc_refs);
	for (i = 0; i < 3; i++) {
		char doc[256], path[16];
		int nid;

		snprintf(doc, sizeof(doc), "[" REC("a", "s", "/s", "8001") ",{\"id\":\"n%d\","
			 "\"name\":\"n%d\",\"path\":\"/n%d\",\"host\":\"h\",\"port\":9000}]", i, i, i);
		apply(f, doc);
		snprintf(path, sizeof(path), "/n%d", i);
		nid = svc_id(f, path);
		assert_true(nid >= 0);
		assert_int_not_equal(nid, gone);
	}
	assert_true(f->r.svc[gone].used);
	memset(svc_refs, 0, sizeof(svc_refs));
	router_gc(&f->r, inst_refs, svc_refs);
	assert_false(f->r.svc[gone].used);
	assert_int_equal(f->r.n_retired, 0);
}

static void test_moved_instance_is_a_new_instance(void **state)
{
	struct fixture *f = FIXTURE(state);
	int before, after;

	apply(f, "[" REC("a", "s", "/s", "8001") "]");
	before = slot_of(f, "/s", "a");
	apply(f, "[" REC("a", "s", "/s", "8002") "]");
	after = slot_of(f, "/s", "a");
	assert_true(after >= 0 && after != before);
	assert_int_equal(state_of(f, before), PS_INST_DRAINING);
	assert_int_equal(ntohs(f->dp.instances[after].port), 8002);
	assert_true(f->dp.instances[after].gen != 0);
}

static void test_pick_takes_only_instances_that_are_up(void **state)
{
	struct fixture *f = FIXTURE(state);
	struct backend b;
	uint64_t tried;
	int a, down, id, i;

	apply(f, "[" REC("a", "s", "/s", "8001") "," REC("b", "s", "/s", "8002") "]");
	a = slot_of(f, "/s", "a");
	down = slot_of(f, "/s", "b");
	f->dp.instances[down].state = PS_INST_DOWN;
	id = svc_id(f, "/s");
	for (i = 0; i < 4; i++) {
		tried = 0;
		assert_int_equal(router_pick(&f->r, id, &tried, &b), 0);
		assert_int_equal(b.inst, a);
		assert_int_equal(ntohs(b.addr.sin_port), 8001);
		/* the only live one is tried: nothing is left for a retry */
		assert_int_equal(router_pick(&f->r, id, &tried, &b), -1);
	}
	f->dp.instances[a].state = PS_INST_DOWN;
	tried = 0;
	assert_int_equal(router_pick(&f->r, id, &tried, &b), -1);
}

static void test_a_table_that_does_not_fit_changes_nothing(void **state)
{
	struct fixture *f = FIXTURE(state);
	struct routes rt = { 0 };
	struct ps_service s;
	size_t i;

	apply(f, "[" REC("a", "s", "/s", "8001") "]");
	/* more services than ids: built by hand, registry_parse would refuse it */
	rt.n = PS_MAX_SERVICES + 1;
	rt.svc = calloc(rt.n, sizeof(*rt.svc));
	assert_non_null(rt.svc);
	for (i = 0; i < rt.n; i++) {
		struct route_service *rs = &rt.svc[i];

		rs->path_len = snprintf(rs->path, sizeof(rs->path), "/x%zu", i);
		rs->hash = ps_path_hash(rs->path, rs->path_len);
		snprintf(rs->name, sizeof(rs->name), "x%zu", i);
	}
	assert_int_equal(router_update(&f->r, &rt), -1);
	free(rt.svc);
	assert_true(map_service(f, "/s", &s));
	assert_int_equal(svc_id(f, "/s"), s.id);
	assert_false(map_service(f, "/x0", &s));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kept_instances_keep_their_slots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removed_instance_drains_until_nothing_refers_to_it,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_removed_service_leaves_the_map_at_once_and_its_id_waits,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_moved_instance_is_a_new_instance, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pick_takes_only_instances_that_are_up, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_table_that_does_not_fit_changes_nothing, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
