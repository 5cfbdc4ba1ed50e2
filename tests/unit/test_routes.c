// SPDX-License-Identifier: GPL-2.0
/*
 * Route table: which instances a host serves, and which service a request
 * path routes to (the same longest whole-segment prefix the kernel picks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/registry.h"
#include "../../user/routes.h"

#define HOST "web-1"

static struct reg_instance records[PS_MAX_INSTANCES];
static struct registry reg = { records, 0 };
static struct routes rt;
static char err[512];

static int teardown(void **state)
{
	routes_free(&rt);
	memset(records, 0, sizeof(records));
	reg.n = 0;
	err[0] = '\0';
	return 0;
}

static struct reg_instance *add(const char *id, const char *name, const char *path,
				const char *host, uint16_t port)
{
	struct reg_instance *ri = &records[reg.n++];

	snprintf(ri->id, sizeof(ri->id), "%s", id);
	snprintf(ri->name, sizeof(ri->name), "%s", name);
	snprintf(ri->path, sizeof(ri->path), "%s", path);
	snprintf(ri->host, sizeof(ri->host), "%s", host);
	ri->port = port;
	return ri;
}

/* One instance per path, all on HOST, service named after its path. */
static void build_services(const char *const *paths, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char id[16];

		snprintf(id, sizeof(id), "i%zu", i);
		add(id, paths[i], paths[i], HOST, (uint16_t)(8000 + i));
	}
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
}

#define BUILD(...)								\
	do {									\
		static const char *const paths_[] = { __VA_ARGS__ };		\
		build_services(paths_, sizeof(paths_) / sizeof(paths_[0]));	\
	} while (0)

/* The path of the service `path` routes to, or "(none)". The request is
 * copied to a buffer of exactly its length, so an over-read is caught. */
static const char *match(const char *path)
{
	static char result[PS_PATH_MAX];
	size_t len = strlen(path);
	char *exact = malloc(len ? len : 1);
	const struct route_service *s;

	assert_non_null(exact);
	memcpy(exact, path, len);
	s = routes_match(&rt, exact, len);
	free(exact);
	snprintf(result, sizeof(result), "%s", s ? s->path : "(none)");
	return result;
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* ---- building ---- */

static void test_build_keeps_only_instances_of_its_host(void **state)
{
	add("a1", "svc", "/svc", HOST, 8001);
	add("b1", "svc", "/svc", "web-2", 8001);
	add("b2", "other", "/other", "web-2", 8002);
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.n, 1);
	assert_int_equal(rt.svc[0].n_inst, 1);
	assert_string_equal(rt.svc[0].inst[0].id, "a1");
}

static void test_build_host_name_must_match_exactly(void **state)
{
	add("a1", "svc", "/svc", "web-10", 8001);
	add("a2", "svc", "/svc", "WEB-1", 8002);
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.n, 0);
}

static void test_build_groups_instances_by_path_in_registry_order(void **state)
{
	add("a1", "one", "/one", HOST, 8001);
	add("b1", "two", "/two", HOST, 8003);
	add("a2", "one", "/one", HOST, 8002);
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.n, 2);
	assert_string_equal(rt.svc[0].name, "one");
	assert_string_equal(rt.svc[0].path, "/one");
	assert_int_equal(rt.svc[0].path_len, 4);
	assert_int_equal(rt.svc[0].n_inst, 2);
	assert_string_equal(rt.svc[0].inst[0].id, "a1");
	assert_string_equal(rt.svc[0].inst[1].id, "a2");
	assert_string_equal(rt.svc[1].name, "two");
	assert_int_equal(rt.svc[1].n_inst, 1);
	assert_string_equal(rt.svc[1].inst[0].id, "b1");
}

static void test_build_defaults_address_to_loopback(void **state)
{
	add("a1", "svc", "/svc", HOST, 8001);
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.svc[0].inst[0].addr, htonl(INADDR_LOOPBACK));
}

static void test_build_keeps_address_port_and_check(void **state)
{
	struct reg_instance *ri = add("a1", "svc", "/svc", HOST, 8001);

	ri->addr = htonl(0x0a000005);
	snprintf(ri->check, sizeof(ri->check), "/healthz");
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.svc[0].inst[0].addr, htonl(0x0a000005));
	assert_int_equal(rt.svc[0].inst[0].port, 8001);
	assert_string_equal(rt.svc[0].inst[0].check, "/healthz");
}

static void test_build_from_parsed_registry(void **state)
{
	static const char text[] =
		"{\"instances\": ["
		"{\"id\": \"s1-a\", \"name\": \"service1\", \"path\": \"/service1/\", "
		"\"host\": \"demo\", \"port\": 8001},"
		"{\"id\": \"s2-a\", \"name\": \"service2\", \"path\": \"/service2\", "
		"\"host\": \"demo\", \"port\": 8003, \"address\": \"127.0.0.3\"}]}";
	struct registry parsed;

	assert_int_equal(registry_parse(text, strlen(text), "t", &parsed, err, sizeof(err)), 0);
	assert_int_equal(routes_build(&parsed, "demo", &rt, err, sizeof(err)), 0);
	registry_free(&parsed);
	assert_int_equal(rt.n, 2);
	assert_string_equal(match("/service1/x"), "/service1");
	assert_int_equal(rt.svc[1].inst[0].addr, htonl(0x7f000003));
}

static void test_build_for_host_without_instances_is_empty(void **state)
{
	add("b1", "svc", "/svc", "web-2", 8001);
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.n, 0);
	assert_null(rt.svc);
	assert_string_equal(match("/svc"), "(none)");
}

static void test_build_accepts_max_instances_per_service(void **state)
{
	size_t i;

	for (i = 0; i < PS_SVC_MAX_INST; i++) {
		char id[16];

		snprintf(id, sizeof(id), "i%zu", i);
		add(id, "svc", "/svc", HOST, (uint16_t)(8000 + i));
	}
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.svc[0].n_inst, PS_SVC_MAX_INST);
	assert_int_equal(rt.svc[0].inst[PS_SVC_MAX_INST - 1].port, 8000 + PS_SVC_MAX_INST - 1);
}

static void test_build_rejects_too_many_instances_in_a_service(void **state)
{
	size_t i;

	for (i = 0; i <= PS_SVC_MAX_INST; i++) {
		char id[16];

		snprintf(id, sizeof(id), "i%zu", i);
		add(id, "svc", "/svc", HOST, (uint16_t)(8000 + i));
	}
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), -1);
	assert_null(rt.svc);
	assert_int_equal(rt.n, 0);
	assert_string_equal(err, "host \"web-1\": service \"svc\" (path \"/svc\"): more than 64 "
			    "instances: instance \"i64\" is over the limit");
}

static void test_build_instances_of_other_hosts_do_not_count_to_limits(void **state)
{
	size_t i;

	for (i = 0; i <= PS_SVC_MAX_INST; i++) {
		char id[16];

		snprintf(id, sizeof(id), "i%zu", i);
		add(id, "svc", "/svc", i ? "web-2" : HOST, (uint16_t)(8000 + i));
	}
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.svc[0].n_inst, 1);
}

static void add_services(size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char id[16], path[16];

		snprintf(id, sizeof(id), "s%zu", i);
		snprintf(path, sizeof(path), "/s%zu", i);
		add(id, id, path, HOST, 8000);
	}
}

static void test_build_accepts_max_services(void **state)
{
	add_services(PS_MAX_SERVICES);
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), 0);
	assert_int_equal(rt.n, PS_MAX_SERVICES);
	assert_string_equal(match("/s1023/x"), "/s1023");
	assert_string_equal(match("/s0"), "/s0");
}

static void test_build_rejects_too_many_services(void **state)
{
	add_services(PS_MAX_SERVICES + 1);
	assert_int_equal(routes_build(&reg, HOST, &rt, err, sizeof(err)), -1);
	assert_null(rt.svc);
	assert_string_equal(err, "host \"web-1\": more than 1024 services: service \"s1024\" "
			    "(path \"/s1024\") is over the limit");
}

static void test_service_hash_is_path_hash(void **state)
{
	BUILD("/service1");
	assert_int_equal(rt.svc[0].hash, ps_path_hash("/service1", 9));
	assert_int_equal(rt.svc[0].hash, 0xea6d9a4ddd18b9ccULL);
}

/* ---- the path hash (64-bit FNV-1a reference values) ---- */

static void test_hash_of_empty_path(void **state)
{
	assert_int_equal(ps_path_hash("", 0), 0xcbf29ce484222325ULL);
}

static void test_hash_of_a(void **state)
{
	assert_int_equal(ps_path_hash("a", 1), 0xaf63dc4c8601ec8cULL);
}

static void test_hash_of_foobar(void **state)
{
	assert_int_equal(ps_path_hash("foobar", 6), 0x85944171f73967e8ULL);
}

static void test_hash_covers_only_len_bytes(void **state)
{
	assert_int_equal(ps_path_hash("foobar!", 6), 0x85944171f73967e8ULL);
}

/* ---- matching ---- */

static void test_match_exact_path(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/svc"), "/svc");
}

static void test_match_path_with_trailing_slash(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/svc/"), "/svc");
}

static void test_match_path_below_service(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/svc/x"), "/svc");
}

static void test_match_deep_path(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/svc/a/b/c/d/e/f.html"), "/svc");
}

static void test_match_stops_at_query(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/svc?q=1"), "/svc");
}

static void test_match_ignores_segments_after_query(void **state)
{
	BUILD("/a", "/a/b");
	assert_string_equal(match("/a?x=/a/b"), "/a");
}

static void test_match_never_crosses_segment_boundary(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/svc2"), "(none)");
}

static void test_match_never_matches_longer_segment_below(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/svcx/y"), "(none)");
}

static void test_match_shorter_request_is_no_match(void **state)
{
	BUILD("/svc/api");
	assert_string_equal(match("/svc"), "(none)");
}

static void test_match_longest_prefix_wins(void **state)
{
	BUILD("/a", "/a/b");
	assert_string_equal(match("/a/b/c"), "/a/b");
}

static void test_match_longest_prefix_wins_whatever_the_order(void **state)
{
	BUILD("/a/b", "/a");
	assert_string_equal(match("/a/b/c"), "/a/b");
}

static void test_match_partial_segment_falls_back_to_parent(void **state)
{
	BUILD("/a", "/a/b");
	assert_string_equal(match("/a/bc"), "/a");
}

static void test_root_service_matches_every_path(void **state)
{
	BUILD("/");
	assert_string_equal(match("/"), "/");
	assert_string_equal(match("/anything/at/all"), "/");
	assert_string_equal(match("/?q"), "/");
}

static void test_root_service_loses_to_longer_match(void **state)
{
	BUILD("/", "/svc");
	assert_string_equal(match("/svc/x"), "/svc");
	assert_string_equal(match("/svc2"), "/");
}

static void test_match_without_service_is_null(void **state)
{
	BUILD("/svc");
	assert_string_equal(match("/other"), "(none)");
	assert_string_equal(match("/"), "(none)");
}

static void test_match_path_not_starting_with_slash_is_null(void **state)
{
	BUILD("/");
	assert_string_equal(match("svc"), "(none)");
	assert_string_equal(match("*"), "(none)");
	assert_string_equal(match(""), "(none)");
}

static void test_match_reads_only_len_bytes(void **state)
{
	BUILD("/a", "/a/b");
	assert_ptr_equal(routes_match(&rt, "/a/bc", 4), routes_lookup(&rt, ps_path_hash("/a/b", 4),
									"/a/b", 4));
}

static void test_match_on_empty_table_is_null(void **state)
{
	assert_null(routes_match(&rt, "/svc", 4));
}

static void test_match_long_request_routes_by_its_prefix(void **state)
{
	char *path = repeat('x', 300);

	memcpy(path, "/svc/", 5);
	BUILD("/svc");
	assert_string_equal(match(path), "/svc");
	free(path);
}

static void test_match_long_request_without_slash_routes_to_root(void **state)
{
	char *path = repeat('x', 300);

	path[0] = '/';
	BUILD("/");
	assert_string_equal(match(path), "/");
	free(path);
}

static void test_match_service_of_127_bytes(void **state)
{
	char *svc = repeat('s', PS_PATH_MAX - 1);
	char *req = repeat('r', 2 * PS_PATH_MAX);

	svc[0] = '/';
	memcpy(req, svc, PS_PATH_MAX - 1);
	req[PS_PATH_MAX - 1] = '/';	/* the prefix before this '/' is 127 bytes */
	build_services((const char *const *)&svc, 1);
	assert_string_equal(match(svc), svc);
	assert_string_equal(match(req), svc);
	free(svc);
	free(req);
}

static void test_lookup_of_128_bytes_is_null(void **state)
{
	char *path = repeat('p', PS_PATH_MAX);

	path[0] = '/';
	BUILD("/");
	assert_null(routes_lookup(&rt, ps_path_hash(path, PS_PATH_MAX), path, PS_PATH_MAX));
	free(path);
}

static void test_lookup_finds_exact_path(void **state)
{
	BUILD("/a", "/b");
	assert_ptr_equal(routes_lookup(&rt, ps_path_hash("/b", 2), "/b", 2), &rt.svc[1]);
}

static void test_lookup_is_not_a_prefix_match(void **state)
{
	BUILD("/a");
	assert_null(routes_lookup(&rt, ps_path_hash("/a/x", 4), "/a/x", 4));
}

static void test_lookup_verifies_bytes_when_hash_matches(void **state)
{
	BUILD("/a");
	assert_null(routes_lookup(&rt, ps_path_hash("/a", 2), "/b", 2));
}

/* Finds three distinct paths whose hashes agree in the low 12 bits, i.e. share
 * a bucket in any index of up to 4096 slots (PS_MAX_SERVICES needs 2048). */
static void three_in_one_bucket(char paths[3][16])
{
	static uint32_t first[4096], second[4096];
	uint32_t i;

	memset(first, 0, sizeof(first));
	memset(second, 0, sizeof(second));
	for (i = 1;; i++) {
		char p[16];
		uint64_t b;

		snprintf(p, sizeof(p), "/p%u", i);
		b = ps_path_hash(p, strlen(p)) & 4095;
		if (!first[b]) {
			first[b] = i;
		} else if (!second[b]) {
			second[b] = i;
		} else {
			snprintf(paths[0], 16, "/p%u", first[b]);
			snprintf(paths[1], 16, "/p%u", second[b]);
			snprintf(paths[2], 16, "/p%u", i);
			return;
		}
	}
}

static void test_paths_sharing_a_bucket_each_resolve(void **state)
{
	char paths[3][16];
	const char *const two[] = { paths[0], paths[1] };
	uint64_t h0, h1;

	three_in_one_bucket(paths);
	build_services(two, 2);
	h0 = ps_path_hash(paths[0], strlen(paths[0]));
	h1 = ps_path_hash(paths[1], strlen(paths[1]));
	assert_int_equal(h0 & rt.index_mask, h1 & rt.index_mask);
	assert_string_equal(match(paths[0]), paths[0]);
	assert_string_equal(match(paths[1]), paths[1]);
	assert_ptr_equal(routes_lookup(&rt, h1, paths[1], strlen(paths[1])), &rt.svc[1]);
}

static void test_absent_path_in_a_shared_bucket_is_null(void **state)
{
	char paths[3][16];
	const char *const two[] = { paths[0], paths[1] };

	three_in_one_bucket(paths);
	build_services(two, 2);
	assert_string_equal(match(paths[2]), "(none)");
}

static void test_routes_free_leaves_table_empty(void **state)
{
	BUILD("/svc");
	routes_free(&rt);
	assert_null(rt.svc);
	assert_null(rt.index);
	assert_int_equal(rt.n, 0);
	assert_null(routes_match(&rt, "/svc", 4));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_teardown(fn, teardown)
		T(test_build_keeps_only_instances_of_its_host),
		T(test_build_host_name_must_match_exactly),
		T(test_build_groups_instances_by_path_in_registry_order),
		T(test_build_defaults_address_to_loopback),
		T(test_build_keeps_address_port_and_check),
		T(test_build_from_parsed_registry),
		T(test_build_for_host_without_instances_is_empty),
		T(test_build_accepts_max_instances_per_service),
		T(test_build_rejects_too_many_instances_in_a_service),
		T(test_build_instances_of_other_hosts_do_not_count_to_limits),
		T(test_build_accepts_max_services),
		T(test_build_rejects_too_many_services),
		T(test_service_hash_is_path_hash),
		T(test_hash_of_empty_path),
		T(test_hash_of_a),
		T(test_hash_of_foobar),
		T(test_hash_covers_only_len_bytes),
		T(test_match_exact_path),
		T(test_match_path_with_trailing_slash),
		T(test_match_path_below_service),
		T(test_match_deep_path),
		T(test_match_stops_at_query),
		T(test_match_ignores_segments_after_query),
		T(test_match_never_crosses_segment_boundary),
		T(test_match_never_matches_longer_segment_below),
		T(test_match_shorter_request_is_no_match),
		T(test_match_longest_prefix_wins),
		T(test_match_longest_prefix_wins_whatever_the_order),
		T(test_match_partial_segment_falls_back_to_parent),
		T(test_root_service_matches_every_path),
		T(test_root_service_loses_to_longer_match),
		T(test_match_without_service_is_null),
		T(test_match_path_not_starting_with_slash_is_null),
		T(test_match_reads_only_len_bytes),
		T(test_match_on_empty_table_is_null),
		T(test_match_long_request_routes_by_its_prefix),
		T(test_match_long_request_without_slash_routes_to_root),
		T(test_match_service_of_127_bytes),
		T(test_lookup_of_128_bytes_is_null),
		T(test_lookup_finds_exact_path),
		T(test_lookup_is_not_a_prefix_match),
		T(test_lookup_verifies_bytes_when_hash_matches),
		T(test_paths_sharing_a_bucket_each_resolve),
		T(test_absent_path_in_a_shared_bucket_is_null),
		T(test_routes_free_leaves_table_empty),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
