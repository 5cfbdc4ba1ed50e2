// SPDX-License-Identifier: GPL-2.0
/*
 * The admin surface without a daemon: Prometheus rendering (label escaping,
 * HELP/TYPE once per family, series unique), the status table, the /proc
 * parsers, the collector on hand-filled BPF maps (skipped without the
 * privilege to create maps), and the HTTP endpoint on fds of -1.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <curl/curl.h>
#include <jansson.h>

#include "../../user/admin.h"
#include "../../user/procstat.h"
#include "../../user/stats.h"
#include "pathsplice.h"

#define assert_contains(hay, needle)						\
	do {									\
		if (!strstr((hay), (needle)))					\
			fail_msg("\"%s\"\n  does not contain \"%s\"", (hay), (needle)); \
	} while (0)

/* ---- a stats document by hand ------------------------------------------ */

static json_t *counters(json_t *o, long long base)
{
	static const char *const keys[] = {
		"connections_active", "connections_total", "requests", "bytes_to_backend",
		"bytes_to_client", "retries", "health_transitions", "passive_downs",
		"checks_failed", "handbacks", "bytes_to_backend_direct", "bytes_to_client_direct",
		"bytes_from_caller_direct", "bytes_to_caller_direct",
	};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		json_object_set_new(o, keys[i], json_integer(base + (long long)i));
	return o;
}

static json_t *instance(int slot, const char *id, const char *addr, const char *state,
			long long base)
{
	return counters(json_pack("{s:i, s:s, s:s, s:s, s:s}", "slot", slot, "id", id,
				  "address", addr, "state", state, "reason", "check passed"),
			base);
}

/* Two services (one with a name to escape), a draining instance under its
 * service, and two draining instances of removed services with the same id
 * and address. */
static json_t *sample_doc(bool with_uptime)
{
	json_t *s1, *s2, *doc;

	s1 = counters(json_pack("{s:i, s:s, s:s, s:s, s:i, s:i}", "id", 0, "name", "service1",
				"path", "/service1", "state", "up", "instances_up", 1,
				"instances_listed", 2), 100);
	json_object_set_new(s1, "instances",
			    json_pack("[o, o, o]",
				      instance(0, "s1-a", "127.0.0.1:8001", "up", 1000),
				      instance(1, "s1-b", "127.0.0.1:8002", "down", 2000),
				      instance(5, "s1-old", "127.0.0.1:8009", "draining",
					       1500000)));
	s2 = counters(json_pack("{s:i, s:s, s:s, s:s, s:i, s:i}", "id", 1,
				"name", "we\"ird\\na\nme", "path", "/s2", "state", "down",
				"instances_up", 0, "instances_listed", 1), 0);
	json_object_set_new(s2, "instances",
			    json_pack("[o]", instance(2, "x\"1", "127.0.0.1:8003", "down", 0)));
	doc = json_pack("{s:o, s:[o, o], s:[o, o]}",
			"totals", counters(json_pack("{s:i, s:i, s:i, s:i}", "services", 2,
						     "instances", 6, "instances_up", 1,
						     "instances_draining", 3), 7),
			"services", s1, s2,
			"draining",
			instance(7, "gone", "127.0.0.1:9000", "draining", 5),
			instance(8, "gone", "127.0.0.1:9000", "draining", 6));
	json_object_set_new(doc, "uptime_seconds",
			    with_uptime ? json_integer(90061) : json_null());
	assert_non_null(doc);
	return doc;
}

/* ---- a strict reader of the text format 0.0.4 -------------------------- */

static bool name_ok(const char *s, size_t n)
{
	if (!n || !(s[0] == '_' || s[0] == ':' || ((s[0] | 32) >= 'a' && (s[0] | 32) <= 'z')))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(s[i] == '_' || s[i] == ':' || ((s[i] | 32) >= 'a' && (s[i] | 32) <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

struct family {
	char name[128];
	bool help, type, samples_done;
};

/* Checks the whole text and fails the test on the first violation: lines
 * end in \n; HELP and TYPE once per family, before its samples; samples of a
 * family contiguous; `name{l="v",...} value` with only \\ \" \n escapes;
 * no series twice. Returns the number of samples. */
static int check_exposition(const char *text)
{
	struct family fam[64];
	char **series = NULL;
	int n_fam = 0, n_series = 0, cur = -1;
	const char *line = text;

	assert_true(*text == '\0' || text[strlen(text) - 1] == '\n');
	while (*line) {
		const char *end = strchr(line, '\n');
		size_t len = (size_t)(end - line);
		char buf[1024];

		assert_true(len < sizeof(buf));
		memcpy(buf, line, len);
		buf[len] = '\0';
		line = end + 1;
		if (!strncmp(buf, "# HELP ", 7) || !strncmp(buf, "# TYPE ", 7)) {
			bool help = buf[2] == 'H';
			char *name = buf + 7, *sp = strchr(name, ' ');
			int f;

			assert_non_null(sp);
			*sp = '\0';
			assert_true(name_ok(name, strlen(name)));
			for (f = 0; f < n_fam && strcmp(fam[f].name, name); f++)
				;
			if (f == n_fam) {
				assert_true(n_fam < 64);
				memset(&fam[f], 0, sizeof(fam[f]));
				snprintf(fam[f].name, sizeof(fam[f].name), "%s", name);
				n_fam++;
			}
			if (cur >= 0 && cur != f)
				fam[cur].samples_done = true;
			if (fam[f].samples_done || (help ? fam[f].help : fam[f].type))
				fail_msg("%s for %s twice, or after its samples", help ? "HELP" : "TYPE",
					 name);
			if (help)
				fam[f].help = true;
			else {
				assert_true(!strcmp(sp + 1, "counter") || !strcmp(sp + 1, "gauge"));
				fam[f].type = true;
			}
			cur = f;
			continue;
		}
		assert_true(buf[0] != '#' && buf[0] != '\0');
		{
			char *p = buf, *brace = strchr(buf, '{'), *val;
			size_t nlen = brace ? (size_t)(brace - buf) : strcspn(buf, " ");
			char name[128];
			int f;

			assert_true(nlen < sizeof(name));
			memcpy(name, buf, nlen);
			name[nlen] = '\0';
			if (!name_ok(name, nlen))
				fail_msg("bad metric name in: %s", buf);
			for (f = 0; f < n_fam && strcmp(fam[f].name, name); f++)
				;
			if (f == n_fam || !fam[f].help || !fam[f].type)
				fail_msg("sample before HELP and TYPE: %s", buf);
			if (f != cur || fam[f].samples_done)
				fail_msg("samples of %s not contiguous", name);
			p = buf + nlen;
			if (*p == '{') {
				p++;
				while (*p != '}') {
					size_t l = strcspn(p, "=");

					if (!name_ok(p, l) || p[l] != '=' || p[l + 1] != '"')
						fail_msg("bad label in: %s", buf);
					p += l + 2;
					while (*p != '"') {
						if (!*p || *p == '\n')
							fail_msg("unterminated label value: %s", buf);
						if (*p == '\\') {
							if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
								fail_msg("bad escape in: %s", buf);
							p++;
						}
						p++;
					}
					p++;
					if (*p == ',')
						p++;
					else if (*p != '}')
						fail_msg("bad label list in: %s", buf);
				}
				p++;
			}
			if (*p != ' ')
				fail_msg("no value in: %s", buf);
			val = p + 1;
			{
				char *e;

				strtod(val, &e);
				if (e == val || *e)
					fail_msg("bad value in: %s", buf);
			}
			*p = '\0';	/* the series: name and labels */
			for (int s = 0; s < n_series; s++)
				if (!strcmp(series[s], buf))
					fail_msg("series twice: %s", buf);
			series = realloc(series, (n_series + 1) * sizeof(*series));
			assert_non_null(series);
			series[n_series++] = strdup(buf);
		}
	}
	for (int s = 0; s < n_series; s++)
		free(series[s]);
	free(series);
	return n_series;
}

static char *render(json_t *doc)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(stats_to_prometheus(doc, &text, &len), 0);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

/* ---- Prometheus ------------------------------------------------------------ */

static void test_prometheus_text_is_strictly_valid(void **state)
{
	json_t *doc = sample_doc(true);
	char *text = render(doc);

	/* 1 uptime + 2x2 service + 6 instances x (1 up + 3 state + 14 counters) */
	assert_int_equal(check_exposition(text), 1 + 4 + 6 * 18);
	free(text);
	json_decref(doc);
}

static void test_prometheus_escapes_label_values(void **state)
{
	json_t *doc = sample_doc(true);
	char *text = render(doc);

	assert_contains(text, "pathsplice_service_up{service=\"we\\\"ird\\\\na\\nme\",path=\"/s2\"} 0\n");
	assert_contains(text, "instance_id=\"x\\\"1\"");
	free(text);
	json_decref(doc);
}

static void test_prometheus_help_and_type_once_per_family(void **state)
{
	json_t *doc = sample_doc(true);
	char *text = render(doc), *p;
	int helps = 0, types = 0;

	for (p = text; (p = strstr(p, "# HELP pathsplice_instance_requests_total ")); p++)
		helps++;
	for (p = text; (p = strstr(p, "# TYPE pathsplice_instance_requests_total counter\n")); p++)
		types++;
	assert_int_equal(helps, 1);
	assert_int_equal(types, 1);
	assert_contains(text, "# TYPE pathsplice_instance_connections_active gauge\n");
	assert_contains(text, "# TYPE pathsplice_uptime_seconds gauge\npathsplice_uptime_seconds 90061\n");
	free(text);
	json_decref(doc);
}

static void test_prometheus_instance_values_and_labels(void **state)
{
	json_t *doc = sample_doc(true);
	char *text = render(doc);

	/* requests is counter #2: base + 2 */
	assert_contains(text, "pathsplice_instance_requests_total{service=\"service1\",path=\"/service1\","
			"instance_id=\"s1-a\",address=\"127.0.0.1:8001\"} 1002\n");
	assert_contains(text, "pathsplice_instance_response_bytes_total{service=\"service1\","
			"path=\"/service1\",instance_id=\"s1-old\",address=\"127.0.0.1:8009\"} 1500004\n");
	assert_contains(text, "pathsplice_instance_up{service=\"service1\",path=\"/service1\","
			"instance_id=\"s1-b\",address=\"127.0.0.1:8002\"} 0\n");
	assert_contains(text, "instance_id=\"s1-old\",address=\"127.0.0.1:8009\",state=\"draining\"} 1\n");
	assert_contains(text, "instance_id=\"s1-old\",address=\"127.0.0.1:8009\",state=\"up\"} 0\n");
	assert_contains(text, "pathsplice_service_instances_up{service=\"service1\",path=\"/service1\"} 1\n");
	free(text);
	json_decref(doc);
}

static void test_prometheus_tells_identical_instances_apart_by_slot(void **state)
{
	json_t *doc = sample_doc(true);
	char *text = render(doc);

	assert_contains(text, "pathsplice_instance_up{service=\"\",path=\"\",instance_id=\"gone\","
			"address=\"127.0.0.1:9000\",slot=\"7\"} 0\n");
	assert_contains(text, "instance_id=\"gone\",address=\"127.0.0.1:9000\",slot=\"8\"} 0\n");
	/* the others get no slot label */
	assert_null(strstr(text, "instance_id=\"s1-a\",address=\"127.0.0.1:8001\",slot"));
	free(text);
	json_decref(doc);
}

static void test_prometheus_without_uptime_omits_it(void **state)
{
	json_t *doc = sample_doc(false);
	char *text = render(doc);

	assert_null(strstr(text, "pathsplice_uptime_seconds"));
	check_exposition(text);
	free(text);
	json_decref(doc);
}

static void test_prometheus_of_empty_document_is_valid(void **state)
{
	json_t *doc = json_pack("{s:n, s:[], s:[], s:{}}", "uptime_seconds", "services",
				"draining", "totals");
	char *text = render(doc);

	assert_int_equal(check_exposition(text), 0);
	assert_contains(text, "# TYPE pathsplice_instance_requests_total counter\n");
	free(text);
	json_decref(doc);
}

static void test_prometheus_refuses_what_is_not_stats(void **state)
{
	json_t *doc = json_pack("[i]", 1);
	char *text = NULL;
	size_t len;

	assert_int_equal(stats_to_prometheus(doc, &text, &len), -1);
	assert_null(text);
	json_decref(doc);
}

static void test_escape_helper(void **state)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	stats_prom_escape(f, "a\\b\"c\nd\te");
	fclose(f);
	assert_string_equal(buf, "a\\\\b\\\"c\\nd\te");
	free(buf);
}

/* ---- the table ----------------------------------------------------------------- */

static char *table_of(json_t *doc)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	stats_print_table(doc, f);
	fclose(f);
	return buf;
}

/* The line that starts with `prefix`. */
static const char *line_of(const char *text, const char *prefix)
{
	const char *p = text;

	for (;;) {
		if (!strncmp(p, prefix, strlen(prefix)))
			return p;
		p = strchr(p, '\n');
		if (!p || !*++p)
			fail_msg("no line starting with \"%s\" in:\n%s", prefix, text);
	}
}

/* Column where the word `w` starts on the line starting with `prefix`. */
static long col_of(const char *text, const char *prefix, const char *w)
{
	const char *l = line_of(text, prefix), *e = strchr(l, '\n'), *p = strstr(l, w);

	if (!p || p > e)
		fail_msg("no \"%s\" on the line \"%s\"", w, prefix);
	return p - l;
}

static void test_table_summary_line(void **state)
{
	json_t *doc = sample_doc(true);
	char *t = table_of(doc);

	assert_contains(t, "pathsplice: 2 services (1 up), 6 instances (1 up, 2 down, 3 draining), "
			"up 1d 01h\n");
	free(t);
	json_decref(doc);
}

static void test_table_rows_are_aligned(void **state)
{
	json_t *doc = sample_doc(true);
	char *t = table_of(doc);
	long state_col = col_of(t, "SERVICE/INSTANCE", "STATE");

	assert_int_equal(col_of(t, "  s1-a ", "up"), state_col);
	assert_int_equal(col_of(t, "  s1-b ", "down"), state_col);
	assert_int_equal(col_of(t, "  s1-old ", "draining"), state_col);
	assert_int_equal(col_of(t, "service1 ", "up"), state_col);
	/* numbers are right-aligned: REQUESTS ends where the values end */
	assert_int_equal(col_of(t, "SERVICE/INSTANCE", "REQUESTS") + (long)strlen("REQUESTS"),
			 col_of(t, "  s1-a ", "1002 ") + 4);
	assert_int_equal(col_of(t, "SERVICE/INSTANCE", "ADDRESS"),
			 col_of(t, "  s1-a ", "127.0.0.1:8001") + 5);
	free(t);
	json_decref(doc);
}

static void test_table_shows_human_bytes_and_reasons(void **state)
{
	json_t *doc = sample_doc(true);
	char *t = table_of(doc);

	/* s1-old: bytes_to_backend 1500003, bytes_to_client 1500004 */
	assert_contains(line_of(t, "  s1-old "), "1.4 MiB");
	assert_contains(line_of(t, "  s1-a "), "check passed");
	assert_contains(line_of(t, "service1 "), "1 of 2 instances up");
	assert_contains(t, "(removed services)\n");
	assert_contains(line_of(t, "  gone "), "draining, service #");
	free(t);
	json_decref(doc);
}

static void test_table_without_services(void **state)
{
	json_t *doc = json_pack("{s:n, s:[], s:[], s:{}}", "uptime_seconds", "services",
				"draining", "totals");
	char *t = table_of(doc);

	assert_contains(t, "pathsplice: 0 services (0 up), 0 instances");
	assert_contains(t, "no services");
	free(t);
	json_decref(doc);
}

static void test_human_bytes(void **state)
{
	char b[32];

	assert_string_equal(stats_human_bytes(0, b, sizeof(b)), "0 B");
	assert_string_equal(stats_human_bytes(1023, b, sizeof(b)), "1023 B");
	assert_string_equal(stats_human_bytes(1024, b, sizeof(b)), "1.0 KiB");
	assert_string_equal(stats_human_bytes(1536, b, sizeof(b)), "1.5 KiB");
	assert_string_equal(stats_human_bytes(5ULL << 30, b, sizeof(b)), "5.0 GiB");
	assert_string_equal(stats_human_bytes(~0ULL, b, sizeof(b)), "16.0 EiB");
}

static void test_json_string_replaces_invalid_utf8(void **state)
{
	json_t *j = stats_json_string("ok\xff\xfe", 16);

	assert_string_equal(json_string_value(j), "ok??");
	json_decref(j);
	j = stats_json_string("abcdef", 3);
	assert_string_equal(json_string_value(j), "abc");
	json_decref(j);
	j = stats_json_string("caf\xc3\xa9", 16);
	assert_string_equal(json_string_value(j), "caf\xc3\xa9");
	json_decref(j);
}

/* ---- /proc parsers ------------------------------------------------------------ */

static void test_parse_stat_with_spaces_and_parens_in_comm(void **state)
{
	char comm[64];
	unsigned long long ticks, start;
	const char *line = "4242 (a) b (c)) R 1 4242 4242 0 -1 4194304 100 0 0 0 "
			   "150 25 0 0 20 0 1 0 987654 1000 100 18446744073709551615";

	assert_int_equal(procstat_parse_stat(line, comm, sizeof(comm), &ticks, &start), 0);
	assert_string_equal(comm, "a) b (c)");
	assert_int_equal(ticks, 175);
	assert_int_equal(start, 987654);
}

static void test_parse_stat_refuses_garbage(void **state)
{
	char comm[8];
	unsigned long long ticks, start;

	assert_int_equal(procstat_parse_stat("", comm, sizeof(comm), &ticks, &start), -EINVAL);
	assert_int_equal(procstat_parse_stat("1 (x", comm, sizeof(comm), &ticks, &start), -EINVAL);
	assert_int_equal(procstat_parse_stat("1 (x) R 1 2 3", comm, sizeof(comm), &ticks, &start),
			 -EINVAL);
	/* a long comm is cut, not overflowed */
	assert_int_equal(procstat_parse_stat("1 (abcdefghijkl) S 0 0 0 0 0 0 0 0 0 0 1 2 0 0 0 0 0 0 3",
					     comm, sizeof(comm), &ticks, &start), 0);
	assert_string_equal(comm, "abcdefg");
	assert_int_equal(ticks, 3);
	assert_int_equal(start, 3);
}

static void test_parse_loadavg(void **state)
{
	double la[3];

	assert_int_equal(procstat_parse_loadavg("0.52 1.25 3.00 2/345 6789\n", la), 0);
	assert_true(la[0] == 0.52 && la[1] == 1.25 && la[2] == 3.0);
	assert_int_equal(procstat_parse_loadavg("0.52 x", la), -EINVAL);
	assert_int_equal(procstat_parse_loadavg("", la), -EINVAL);
}

static void test_load_of_this_host(void **state)
{
	struct host_load l;

	assert_int_equal(procstat_load(&l), 0);
	assert_int_equal(l.cpus, sysconf(_SC_NPROCESSORS_ONLN));
	assert_true(l.load == l.loadavg[1] / (double)l.cpus);
}

static void test_culprit_excludes_the_caller(void **state)
{
	struct culprit c;

	assert_int_equal(procstat_culprit(50, getpid(), &c), 0);
	assert_true(!c.found || c.pid != getpid());
	if (c.found) {
		assert_true(c.cpu >= 0);
		assert_true(c.user[0] && c.command[0]);
	}
}

/* ---- the collector on maps filled by hand ---------------------------------- */

static int make_maps(struct stats_maps *m)
{
	LIBBPF_OPTS(bpf_map_create_opts, hopts, .map_flags = BPF_F_NO_PREALLOC);

	m->prog_fd = -1;
	m->services_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "services", sizeof(__u64),
					sizeof(struct ps_service), PS_MAX_SERVICES, &hopts);
	m->instances_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "instances", sizeof(__u32),
					 sizeof(struct ps_instance), PS_MAX_INSTANCES, NULL);
	m->inst_stats_fd = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "inst_stats", sizeof(__u32),
					  sizeof(struct ps_inst_stats), PS_MAX_INSTANCES, NULL);
	if (m->services_fd < 0 || m->instances_fd < 0 || m->inst_stats_fd < 0)
		return -1;
	return 0;
}

static void close_maps(struct stats_maps *m)
{
	if (m->services_fd >= 0)
		close(m->services_fd);
	if (m->instances_fd >= 0)
		close(m->instances_fd);
	if (m->inst_stats_fd >= 0)
		close(m->inst_stats_fd);
}

static void put_instance(struct stats_maps *m, __u32 slot, const char *id, uint16_t port,
			 uint8_t st, uint32_t service, uint64_t user_requests)
{
	struct ps_instance pi = { 0 };

	pi.addr = htonl(0x7f000001);
	pi.port = htons(port);
	pi.state = st;
	pi.reason = PS_CHK_OK;
	pi.service = service;
	pi.conns_total = 3;
	pi.conns_active = 1;
	pi.connect_failures = 2;
	pi.user_requests = user_requests;
	pi.user_req_bytes = 10;
	pi.user_resp_bytes = 20;
	snprintf(pi.id, sizeof(pi.id), "%s", id);
	assert_int_equal(bpf_map_update_elem(m->instances_fd, &slot, &pi, 0), 0);
}

/* Every CPU counted `requests` requests and 100/200 bytes. */
static void put_kernel_stats(struct stats_maps *m, __u32 slot, uint64_t requests)
{
	int ncpu = libbpf_num_possible_cpus();
	struct ps_inst_stats *v = calloc(ncpu, sizeof(*v));

	assert_non_null(v);
	for (int c = 0; c < ncpu; c++) {
		v[c].requests = requests;
		v[c].req_bytes = 100;
		v[c].resp_bytes = 200;
		v[c].direct_bytes = 150;
		v[c].direct_req_bytes = 50;
		v[c].caller_req_bytes = 30;
		v[c].caller_resp_bytes = 70;
		v[c].handbacks = 1;
		v[c].rx_cut_bytes = 65483;
		v[c].rx_uncut = 2;
	}
	assert_int_equal(bpf_map_update_elem(m->inst_stats_fd, &slot, v, 0), 0);
	free(v);
}

static void put_service(struct stats_maps *m, uint32_t id, const char *path, const char *name,
			uint32_t n, const uint32_t *slots)
{
	struct ps_service s = { 0 };
	__u64 key = 1000 + id;

	s.id = id;
	s.n_inst = n;
	s.path_len = strlen(path);
	memcpy(s.inst, slots, n * sizeof(*slots));
	snprintf(s.path, sizeof(s.path), "%s", path);
	snprintf(s.name, sizeof(s.name), "%s", name);
	assert_int_equal(bpf_map_update_elem(m->services_fd, &key, &s, 0), 0);
}

static void test_collect_from_maps(void **state)
{
	struct stats_maps m;
	const uint32_t s1[] = { 3, 1 }, s2[] = { 2 };
	int ncpu = libbpf_num_possible_cpus();
	json_t *doc, *svc, *inst;

	if (make_maps(&m)) {
		close_maps(&m);
		skip();	/* no privilege to create BPF maps */
	}
	put_instance(&m, 1, "b", 8002, PS_INST_DOWN, 0, 0);
	put_instance(&m, 2, "c", 8003, PS_INST_UP, 1, 0);
	put_instance(&m, 3, "a", 8001, PS_INST_UP, 0, 4);
	put_instance(&m, 4, "a-old", 8000, PS_INST_DRAINING, 0, 0);	/* under /zeta */
	put_instance(&m, 9, "orphan", 7000, PS_INST_DRAINING, 77, 1);	/* service removed */
	put_kernel_stats(&m, 3, 5);
	put_service(&m, 0, "/zeta", "zeta", 2, s1);
	put_service(&m, 1, "/alpha", "alpha", 1, s2);

	doc = stats_collect(&m);
	assert_non_null(doc);
	assert_true(json_is_null(json_object_get(doc, "uptime_seconds")));
	/* sorted by path */
	svc = json_array_get(json_object_get(doc, "services"), 0);
	assert_string_equal(json_string_value(json_object_get(svc, "path")), "/alpha");
	assert_string_equal(json_string_value(json_object_get(svc, "state")), "up");
	svc = json_array_get(json_object_get(doc, "services"), 1);
	assert_string_equal(json_string_value(json_object_get(svc, "name")), "zeta");
	assert_int_equal(json_integer_value(json_object_get(svc, "instances_listed")), 2);
	assert_int_equal(json_integer_value(json_object_get(svc, "instances_up")), 1);
	/* list order, then its draining instance */
	assert_int_equal(json_array_size(json_object_get(svc, "instances")), 3);
	inst = json_array_get(json_object_get(svc, "instances"), 0);
	assert_string_equal(json_string_value(json_object_get(inst, "id")), "a");
	assert_string_equal(json_string_value(json_object_get(inst, "address")), "127.0.0.1:8001");
	assert_string_equal(json_string_value(json_object_get(inst, "state")), "up");
	assert_string_equal(json_string_value(json_object_get(inst, "reason")), "check passed");
	/* kernel (summed over CPUs) + userspace */
	assert_int_equal(json_integer_value(json_object_get(inst, "requests")), 5 * ncpu + 4);
	assert_int_equal(json_integer_value(json_object_get(inst, "bytes_to_backend")), 100 * ncpu + 10);
	assert_int_equal(json_integer_value(json_object_get(inst, "bytes_to_client")), 200 * ncpu + 20);
	assert_int_equal(json_integer_value(json_object_get(inst, "bytes_to_client_direct")), 150 * ncpu);
	assert_int_equal(json_integer_value(json_object_get(inst, "bytes_to_backend_direct")), 50 * ncpu);
	assert_int_equal(json_integer_value(json_object_get(inst, "bytes_from_caller_direct")), 30 * ncpu);
	assert_int_equal(json_integer_value(json_object_get(inst, "bytes_to_caller_direct")), 70 * ncpu);
	assert_int_equal(json_integer_value(json_object_get(inst, "handbacks")), ncpu);
	assert_int_equal(json_integer_value(json_object_get(inst, "retransmit_bytes_cut")), 65483 * ncpu);
	assert_int_equal(json_integer_value(json_object_get(inst, "retransmit_cut_failures")), 2 * ncpu);
	assert_int_equal(json_integer_value(json_object_get(inst, "retries")), 2);
	inst = json_array_get(json_object_get(svc, "instances"), 1);
	assert_string_equal(json_string_value(json_object_get(inst, "id")), "b");
	assert_string_equal(json_string_value(json_object_get(inst, "state")), "down");
	inst = json_array_get(json_object_get(svc, "instances"), 2);
	assert_string_equal(json_string_value(json_object_get(inst, "id")), "a-old");
	assert_string_equal(json_string_value(json_object_get(inst, "state")), "draining");
	/* the service sums its three instances */
	assert_int_equal(json_integer_value(json_object_get(svc, "connections_total")), 9);
	assert_int_equal(json_integer_value(json_object_get(svc, "requests")), 5 * ncpu + 4);
	/* the orphan is listed at the top, with its service id */
	inst = json_array_get(json_object_get(doc, "draining"), 0);
	assert_string_equal(json_string_value(json_object_get(inst, "id")), "orphan");
	assert_int_equal(json_integer_value(json_object_get(inst, "service_id")), 77);
	svc = json_object_get(doc, "totals");
	assert_int_equal(json_integer_value(json_object_get(svc, "services")), 2);
	assert_int_equal(json_integer_value(json_object_get(svc, "instances")), 5);
	assert_int_equal(json_integer_value(json_object_get(svc, "instances_up")), 2);
	assert_int_equal(json_integer_value(json_object_get(svc, "instances_draining")), 2);
	assert_int_equal(json_integer_value(json_object_get(svc, "requests")), 5 * ncpu + 5);
	assert_int_equal(json_integer_value(json_object_get(svc, "connections_total")), 15);
	json_decref(doc);
	close_maps(&m);
}

static void test_collect_refuses_maps_of_another_layout(void **state)
{
	struct stats_maps m;
	int fd;

	if (make_maps(&m)) {
		close_maps(&m);
		skip();
	}
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "instances", sizeof(__u32),
			    sizeof(struct ps_instance) - 8, PS_MAX_INSTANCES, NULL);
	assert_true(fd >= 0);
	close(m.instances_fd);
	m.instances_fd = fd;
	errno = 0;
	assert_null(stats_collect(&m));
	assert_int_equal(errno, EPROTO);
	close_maps(&m);
}

static void test_collect_without_maps_is_ebadf(void **state)
{
	struct stats_maps m = { -1, -1, -1, -1 };

	assert_null(stats_collect(&m));
	assert_int_equal(errno, EBADF);
}

/* ---- the HTTP endpoint ---------------------------------------------------------- */

/* A port that nothing listens on right now. */
static uint16_t free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

struct answer {
	long code;
	char type[128];
	char body[8192];
	size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
	struct answer *a = ctx;
	size_t k = size * n;

	if (k > sizeof(a->body) - 1 - a->len)
		k = sizeof(a->body) - 1 - a->len;
	memcpy(a->body + a->len, p, k);
	a->len += k;
	a->body[a->len] = '\0';
	return size * n;
}

static void fetch(uint16_t port, const char *method, const char *path, struct answer *a)
{
	char url[128];
	char *ct = NULL;
	CURL *c = curl_easy_init();

	memset(a, 0, sizeof(*a));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "GET"))
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->code);
	curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(a->type, sizeof(a->type), "%s", ct ? ct : "");
	curl_easy_cleanup(c);
}

static struct admin *start_admin(uint16_t port, char *err, size_t errlen)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct stats_maps m = { -1, -1, -1, -1 };

	return admin_start(&a, &m, NULL, NULL, err, errlen);
}

static void test_admin_endpoints_without_maps(void **state)
{
	char err[256] = "";
	uint16_t port = free_port();
	struct admin *adm = start_admin(port, err, sizeof(err));
	struct answer a;
	json_t *j;

	if (!adm)
		fail_msg("admin_start: %s", err);
	fetch(port, "GET", "/load", &a);
	assert_int_equal(a.code, 200);
	assert_string_equal(a.type, "application/json");
	j = json_loads(a.body, 0, NULL);
	assert_true(json_is_number(json_object_get(j, "load")));
	assert_int_equal(json_array_size(json_object_get(j, "loadavg")), 3);
	assert_int_equal(json_integer_value(json_object_get(j, "cpus")), sysconf(_SC_NPROCESSORS_ONLN));
	json_decref(j);

	fetch(port, "GET", "/culprit", &a);
	assert_int_equal(a.code, 200);
	j = json_loads(a.body, 0, NULL);
	assert_non_null(json_object_get(j, "pid"));
	assert_non_null(json_object_get(j, "user"));
	assert_non_null(json_object_get(j, "command"));
	assert_true(json_is_number(json_object_get(j, "cpu")));
	/* never this process */
	assert_true(json_integer_value(json_object_get(j, "pid")) != getpid());
	json_decref(j);

	fetch(port, "GET", "/", &a);
	assert_int_equal(a.code, 200);
	assert_contains(a.body, "/metrics");

	/* no maps: a clear 500, not a crash */
	fetch(port, "GET", "/stats", &a);
	assert_int_equal(a.code, 500);
	assert_contains(a.body, "cannot read the BPF maps");
	fetch(port, "GET", "/metrics", &a);
	assert_int_equal(a.code, 500);

	fetch(port, "GET", "/nope", &a);
	assert_int_equal(a.code, 404);
	assert_string_equal(a.type, "application/json");
	assert_contains(a.body, "\"error\"");
	fetch(port, "GET", "/load/", &a);
	assert_int_equal(a.code, 404);
	fetch(port, "POST", "/load", &a);
	assert_int_equal(a.code, 405);
	fetch(port, "DELETE", "/stats", &a);
	assert_int_equal(a.code, 405);
	fetch(port, "HEAD", "/load", &a);
	assert_int_equal(a.code, 200);
	assert_int_equal(a.len, 0);
	/* a query string is ignored */
	fetch(port, "GET", "/load?x=%00%zz", &a);
	assert_int_equal(a.code, 200);
	admin_stop(adm);
}

static void test_admin_second_daemon_can_share_the_port(void **state)
{
	char err[256] = "";
	uint16_t port = free_port();
	struct admin *a1 = start_admin(port, err, sizeof(err));
	struct admin *a2;
	struct answer a;

	assert_non_null(a1);
	a2 = start_admin(port, err, sizeof(err));
	if (!a2)
		fail_msg("second admin_start on the same port: %s", err);
	admin_stop(a1);
	fetch(port, "GET", "/load", &a);
	assert_int_equal(a.code, 200);
	admin_stop(a2);
}

static void test_admin_port_taken_by_another_program(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	char err[256] = "";
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	assert_null(start_admin(ntohs(sa.sin_port), err, sizeof(err)));
	assert_contains(err, "admin endpoint 127.0.0.1:");
	assert_contains(err, "in use");
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prometheus_text_is_strictly_valid),
		cmocka_unit_test(test_prometheus_escapes_label_values),
		cmocka_unit_test(test_prometheus_help_and_type_once_per_family),
		cmocka_unit_test(test_prometheus_instance_values_and_labels),
		cmocka_unit_test(test_prometheus_tells_identical_instances_apart_by_slot),
		cmocka_unit_test(test_prometheus_without_uptime_omits_it),
		cmocka_unit_test(test_prometheus_of_empty_document_is_valid),
		cmocka_unit_test(test_prometheus_refuses_what_is_not_stats),
		cmocka_unit_test(test_escape_helper),
		cmocka_unit_test(test_table_summary_line),
		cmocka_unit_test(test_table_rows_are_aligned),
		cmocka_unit_test(test_table_shows_human_bytes_and_reasons),
		cmocka_unit_test(test_table_without_services),
		cmocka_unit_test(test_human_bytes),
		cmocka_unit_test(test_json_string_replaces_invalid_utf8),
		cmocka_unit_test(test_parse_stat_with_spaces_and_parens_in_comm),
		cmocka_unit_test(test_parse_stat_refuses_garbage),
		cmocka_unit_test(test_parse_loadavg),
		cmocka_unit_test(test_load_of_this_host),
		cmocka_unit_test(test_culprit_excludes_the_caller),
		cmocka_unit_test(test_collect_from_maps),
		cmocka_unit_test(test_collect_refuses_maps_of_another_layout),
		cmocka_unit_test(test_collect_without_maps_is_ebadf),
		cmocka_unit_test(test_admin_endpoints_without_maps),
		cmocka_unit_test(test_admin_second_daemon_can_share_the_port),
		cmocka_unit_test(test_admin_port_taken_by_another_program),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
