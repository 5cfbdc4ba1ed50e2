// SPDX-License-Identifier: GPL-2.0
/*
 * Registry parser: what a valid registry reads as, and the exact error a user
 * gets for each kind of mistake.
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
#include <unistd.h>

#include <jansson.h>

#include "../../user/registry.h"

#define SOURCE "registry.json"

static struct registry reg;
static char err[1024];

static int teardown(void **state)
{
	registry_free(&reg);
	err[0] = '\0';
	return 0;
}

static int parse(const char *text)
{
	/* garbage in `out` proves the parser sets it on every path */
	reg.inst = (struct reg_instance *)0x1;
	reg.n = 99;
	return registry_parse(text, strlen(text), SOURCE, &reg, err, sizeof(err));
}

/* Three valid records (a1, a2: service1 on web-1; a3: service2 on web-1). */
static json_t *valid_document(void)
{
	return json_pack("{s:[{s:s,s:s,s:s,s:s,s:i},{s:s,s:s,s:s,s:s,s:i},{s:s,s:s,s:s,s:s,s:i}]}",
			 "instances",
			 "id", "a1", "name", "service1", "path", "/service1", "host", "web-1",
			 "port", 8001,
			 "id", "a2", "name", "service1", "path", "/service1", "host", "web-1",
			 "port", 8002,
			 "id", "a3", "name", "service2", "path", "/service2", "host", "web-1",
			 "port", 8003);
}

static int parse_document(json_t *doc)
{
	char *text = json_dumps(doc, 0);
	int ret;

	assert_non_null(text);
	ret = parse(text);
	free(text);
	json_decref(doc);
	return ret;
}

/* The valid document with field `field` of record #3 (id "a3") set to `value`
 * (a new reference, stolen), or removed when `value` is NULL. */
static int parse_third_with(const char *field, json_t *value)
{
	json_t *doc = valid_document();
	json_t *third = json_array_get(json_object_get(doc, "instances"), 2);

	if (value)
		json_object_set_new(third, field, value);
	else
		json_object_del(third, field);
	return parse_document(doc);
}

static void assert_failed_empty(int ret)
{
	assert_int_equal(ret, -1);
	assert_null(reg.inst);
	assert_int_equal(reg.n, 0);
}

#define assert_contains(hay, needle)						\
	do {									\
		if (!strstr((hay), (needle)))					\
			fail_msg("\"%s\"\n  does not contain \"%s\"", (hay), (needle)); \
	} while (0)

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* ---- valid documents ---- */

static void test_object_form_reads_every_field(void **state)
{
	assert_int_equal(parse("{\"instances\": [{\"id\": \"a1\", \"name\": \"service1\", "
			       "\"path\": \"/service1\", \"host\": \"web-1\", \"port\": 8001, "
			       "\"address\": \"127.0.0.2\", \"check\": \"/healthz\"}]}"), 0);
	assert_int_equal(reg.n, 1);
	assert_string_equal(reg.inst[0].id, "a1");
	assert_string_equal(reg.inst[0].name, "service1");
	assert_string_equal(reg.inst[0].path, "/service1");
	assert_string_equal(reg.inst[0].host, "web-1");
	assert_int_equal(reg.inst[0].port, 8001);
	assert_int_equal(reg.inst[0].addr, htonl(0x7f000002));
	assert_string_equal(reg.inst[0].check, "/healthz");
}

static void test_bare_array_form_is_accepted(void **state)
{
	assert_int_equal(parse("[{\"id\": \"a1\", \"name\": \"s\", \"path\": \"/s\", "
			       "\"host\": \"h\", \"port\": 1},"
			       " {\"id\": \"a2\", \"name\": \"s\", \"path\": \"/s\", "
			       "\"host\": \"h\", \"port\": 2}]"), 0);
	assert_int_equal(reg.n, 2);
	assert_string_equal(reg.inst[1].id, "a2");
	assert_int_equal(reg.inst[1].port, 2);
}

static void test_records_keep_document_order(void **state)
{
	assert_int_equal(parse_document(valid_document()), 0);
	assert_int_equal(reg.n, 3);
	assert_string_equal(reg.inst[0].id, "a1");
	assert_string_equal(reg.inst[1].id, "a2");
	assert_string_equal(reg.inst[2].id, "a3");
}

static void test_absent_address_and_check_are_zero_and_empty(void **state)
{
	assert_int_equal(parse_document(valid_document()), 0);
	assert_int_equal(reg.inst[0].addr, 0);
	assert_string_equal(reg.inst[0].check, "");
}

static void test_empty_instances_array_is_valid(void **state)
{
	assert_int_equal(parse("{\"instances\": []}"), 0);
	assert_int_equal(reg.n, 0);
	assert_null(reg.inst);
}

static void test_empty_bare_array_is_valid(void **state)
{
	assert_int_equal(parse("[]"), 0);
	assert_int_equal(reg.n, 0);
	assert_null(reg.inst);
}

static void test_unknown_fields_are_ignored(void **state)
{
	assert_int_equal(parse("{\"version\": 7, \"instances\": [{\"id\": \"a1\", \"name\": \"s\", "
			       "\"path\": \"/s\", \"host\": \"h\", \"port\": 1, "
			       "\"weight\": {\"future\": true}}]}"), 0);
	assert_int_equal(reg.n, 1);
}

static void test_trailing_slash_is_removed_from_path(void **state)
{
	assert_int_equal(parse_third_with("path", json_string("/service2/")), 0);
	assert_string_equal(reg.inst[2].path, "/service2");
}

static void test_root_path_stays_root(void **state)
{
	assert_int_equal(parse_third_with("path", json_string("/")), 0);
	assert_string_equal(reg.inst[2].path, "/");
}

static void test_paths_differing_by_trailing_slash_are_one_service(void **state)
{
	json_t *doc = valid_document();

	json_object_set_new(json_array_get(json_object_get(doc, "instances"), 1),
			    "path", json_string("/service1/"));
	assert_int_equal(parse_document(doc), 0);
	assert_string_equal(reg.inst[1].path, "/service1");
}

static void test_dots_inside_a_segment_are_allowed(void **state)
{
	assert_int_equal(parse_third_with("path", json_string("/v1.2/...x/.well-known")), 0);
	assert_string_equal(reg.inst[2].path, "/v1.2/...x/.well-known");
}

static void test_path_of_127_bytes_is_accepted(void **state)
{
	char *p = repeat('p', PS_PATH_MAX - 1);

	p[0] = '/';
	assert_int_equal(parse_third_with("path", json_string(p)), 0);
	assert_string_equal(reg.inst[2].path, p);
	free(p);
}

static void test_id_of_63_bytes_is_accepted(void **state)
{
	char *id = repeat('i', PS_NAME_MAX - 1);

	assert_int_equal(parse_third_with("id", json_string(id)), 0);
	assert_string_equal(reg.inst[2].id, id);
	free(id);
}

static void test_port_limits_1_and_65535_are_accepted(void **state)
{
	json_t *doc = valid_document();
	json_t *list = json_object_get(doc, "instances");

	json_object_set_new(json_array_get(list, 0), "port", json_integer(1));
	json_object_set_new(json_array_get(list, 1), "port", json_integer(65535));
	assert_int_equal(parse_document(doc), 0);
	assert_int_equal(reg.inst[0].port, 1);
	assert_int_equal(reg.inst[1].port, 65535);
}

static void test_address_is_stored_in_network_order(void **state)
{
	assert_int_equal(parse_third_with("address", json_string("10.1.2.3")), 0);
	assert_int_equal(reg.inst[2].addr, htonl(0x0a010203));
}

static void test_check_with_query_is_kept_verbatim(void **state)
{
	assert_int_equal(parse_third_with("check", json_string("/health?full=1")), 0);
	assert_string_equal(reg.inst[2].check, "/health?full=1");
}

static void test_same_service_on_two_hosts_is_valid(void **state)
{
	json_t *doc = valid_document();

	json_object_set_new(json_array_get(json_object_get(doc, "instances"), 1),
			    "host", json_string("web-2"));
	assert_int_equal(parse_document(doc), 0);
	assert_string_equal(reg.inst[1].host, "web-2");
}

static void test_max_instances_are_accepted(void **state)
{
	json_t *list = json_array();
	size_t i;

	for (i = 0; i < PS_MAX_INSTANCES; i++) {
		char id[16];

		snprintf(id, sizeof(id), "i%zu", i);
		json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:i}", "id", id,
						      "name", "s", "path", "/s", "host", "h",
						      "port", 80));
	}
	assert_int_equal(parse_document(list), 0);
	assert_int_equal(reg.n, PS_MAX_INSTANCES);
}

/* ---- document errors ---- */

static void test_syntax_error_names_line_and_column(void **state)
{
	assert_failed_empty(parse("{\n  \"instances\": [\n    {\"id\": \"a1\",\n"
				  "     \"port\": 80a}\n  ]\n}"));
	assert_contains(err, SOURCE ": line 4, column ");
	assert_contains(err, ": JSON syntax error: ");
}

static void test_empty_text_is_a_syntax_error(void **state)
{
	assert_failed_empty(parse(""));
	assert_contains(err, SOURCE ": ");
	assert_contains(err, "JSON syntax error");
}

static void test_duplicate_json_key_is_rejected(void **state)
{
	assert_failed_empty(parse("[{\"id\": \"a1\", \"id\": \"a2\"}]"));
	assert_contains(err, SOURCE ": line 1, column ");
	assert_contains(err, "duplicate object key");
}

static void test_top_level_string_is_rejected(void **state)
{
	assert_failed_empty(parse("\"instances\""));
	assert_string_equal(err, SOURCE ": top level: expected {\"instances\": [...]} or an array "
			    "of instances, got \"instances\"");
}

static void test_top_level_number_is_rejected(void **state)
{
	assert_failed_empty(parse("42"));
	assert_string_equal(err, SOURCE ": top level: expected {\"instances\": [...]} or an array "
			    "of instances, got 42");
}

static void test_top_level_null_is_rejected(void **state)
{
	assert_failed_empty(parse("null"));
	assert_contains(err, "got null");
}

static void test_object_without_instances_is_rejected(void **state)
{
	assert_failed_empty(parse("{\"services\": []}"));
	assert_string_equal(err, SOURCE ": field \"instances\": missing from the top-level object");
}

static void test_instances_that_is_not_an_array_is_rejected(void **state)
{
	assert_failed_empty(parse("{\"instances\": {\"id\": \"a1\"}}"));
	assert_string_equal(err, SOURCE ": field \"instances\": expected an array, got an object");
}

static void test_record_that_is_not_an_object_is_rejected(void **state)
{
	assert_failed_empty(parse("[\"a1\"]"));
	assert_string_equal(err, SOURCE ": instance #1: expected an object, got \"a1\"");
}

static void test_more_than_max_instances_is_rejected(void **state)
{
	json_t *list = json_array();
	size_t i;

	for (i = 0; i <= PS_MAX_INSTANCES; i++)
		json_array_append_new(list, json_object());
	assert_failed_empty(parse_document(list));
	assert_string_equal(err, SOURCE ": 4097 instances, more than the limit of 4096");
}

static void test_document_over_16_mib_is_rejected(void **state)
{
	size_t len = REG_MAX_BYTES + 1;
	char *text = repeat(' ', len);

	text[0] = '[';
	text[len - 1] = ']';
	assert_failed_empty(registry_parse(text, len, SOURCE, &reg, err, sizeof(err)));
	assert_string_equal(err, SOURCE ": 16777217 bytes, more than the limit of 16777216");
	free(text);
}

/* ---- record errors: the message names source, record, id, field and reason ---- */

static void test_port_as_string_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("port", json_string("80a")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"port\": "
			    "expected an integer 1..65535, got \"80a\"");
}

static void test_port_as_numeric_string_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("port", json_string("8003")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"port\": "
			    "expected an integer 1..65535, got \"8003\"");
}

static void test_port_zero_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("port", json_integer(0)));
	assert_contains(err, "field \"port\": expected an integer 1..65535, got 0");
}

static void test_port_65536_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("port", json_integer(65536)));
	assert_contains(err, "field \"port\": expected an integer 1..65535, got 65536");
}

static void test_negative_port_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("port", json_integer(-80)));
	assert_contains(err, "field \"port\": expected an integer 1..65535, got -80");
}

static void test_fractional_port_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("port", json_real(8003.5)));
	assert_contains(err, "field \"port\": expected an integer 1..65535, got 8003.5");
}

static void test_huge_port_integer_is_rejected(void **state)
{
	assert_failed_empty(parse("[{\"id\": \"a1\", \"name\": \"s\", \"path\": \"/s\", "
				  "\"host\": \"h\", \"port\": 99999999999999999999999}]"));
	assert_contains(err, SOURCE ": line 1, column ");
	assert_contains(err, "too big integer");
}

static void test_huge_port_real_is_rejected(void **state)
{
	assert_failed_empty(parse("[{\"id\": \"a1\", \"name\": \"s\", \"path\": \"/s\", "
				  "\"host\": \"h\", \"port\": 1e400}]"));
	assert_contains(err, SOURCE ": line 1, column ");
	assert_contains(err, "real number overflow");
}

static void test_each_required_field_must_be_present(void **state)
{
	static const char *const fields[] = { "name", "path", "host", "port" };
	char want[128];
	size_t i;

	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		assert_failed_empty(parse_third_with(fields[i], NULL));
		snprintf(want, sizeof(want),
			 SOURCE ": instance #3 (id \"a3\"): field \"%s\": missing", fields[i]);
		assert_string_equal(err, want);
	}
}

static void test_missing_id_names_the_record_by_index(void **state)
{
	assert_failed_empty(parse_third_with("id", NULL));
	assert_string_equal(err, SOURCE ": instance #3: field \"id\": missing");
}

static void test_empty_name_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("name", json_string("")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"name\": "
			    "must not be empty");
}

static void test_non_string_host_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("host", json_integer(42)));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"host\": "
			    "expected a string, got 42");
}

static void test_null_optional_field_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("check", json_null()));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"check\": "
			    "expected a string, got null");
}

static void test_id_of_64_bytes_is_rejected(void **state)
{
	char *id = repeat('i', PS_NAME_MAX);

	assert_failed_empty(parse_third_with("id", json_string(id)));
	assert_string_equal(err, SOURCE ": instance #3: field \"id\": "
			    "64 bytes, longer than the limit of 63");
	free(id);
}

static void test_host_with_space_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("host", json_string("web 1")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"host\": "
			    "byte 0x20 at offset 3; only printable ASCII without spaces "
			    "(0x21-0x7e) is allowed");
}

static void test_name_with_non_ascii_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("name", json_string("caf\xc3\xa9")));
	assert_contains(err, "instance #3 (id \"a3\"): field \"name\": byte 0xc3 at offset 3");
}

static void test_long_value_is_shortened_in_error(void **state)
{
	char *port = repeat('9', 200);

	assert_failed_empty(parse_third_with("port", json_string(port)));
	assert_contains(err, "got \"99999");
	assert_contains(err, "...");
	assert_true(strlen(err) < 200);
	free(port);
}

static void test_invalid_address_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("address", json_string("127.0.0.256")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"address\": "
			    "expected a dotted IPv4 address such as \"127.0.0.2\", "
			    "got \"127.0.0.256\"");
}

static void test_host_name_as_address_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("address", json_string("localhost")));
	assert_contains(err, "field \"address\": expected a dotted IPv4 address");
}

static void test_ipv6_address_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("address", json_string("::1")));
	assert_contains(err, "field \"address\": expected a dotted IPv4 address");
}

static void test_unspecified_address_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("address", json_string("0.0.0.0")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"address\": "
			    "\"0.0.0.0\" is not a unicast address an instance can listen on");
}

static void test_multicast_address_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("address", json_string("224.0.0.1")));
	assert_contains(err, "field \"address\": \"224.0.0.1\" is not a unicast address");
}

static void test_path_without_leading_slash_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("service2")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"path\": "
			    "must start with '/', got \"service2\"");
}

static void test_path_of_128_bytes_is_rejected(void **state)
{
	char *p = repeat('p', PS_PATH_MAX);

	p[0] = '/';
	assert_failed_empty(parse_third_with("path", json_string(p)));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"path\": "
			    "128 bytes, longer than the limit of 127");
	free(p);
}

static void test_path_with_query_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/service2?v=1")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"path\": "
			    "'?' at offset 9 is not allowed: paths are matched on raw bytes, "
			    "without query, fragment or percent-decoding");
}

static void test_path_with_fragment_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/service2#top")));
	assert_contains(err, "field \"path\": '#' at offset 9 is not allowed: paths are "
			"matched on raw bytes");
}

static void test_path_with_percent_escape_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/service%32")));
	assert_contains(err, "field \"path\": '%' at offset 8 is not allowed: paths are "
			"matched on raw bytes");
}

static void test_path_with_space_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/my service")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"path\": "
			    "byte 0x20 at offset 3; only visible ASCII (0x21-0x7e) is allowed");
}

static void test_path_with_control_byte_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/a\tb")));
	assert_contains(err, "field \"path\": byte 0x09 at offset 2");
}

static void test_path_with_empty_segment_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/a//b")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"path\": "
			    "empty segment (\"//\") in \"/a//b\"");
}

static void test_path_of_two_slashes_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("//")));
	assert_contains(err, "field \"path\": empty segment (\"//\") in \"//\"");
}

static void test_path_with_dot_segment_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/a/./b")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"path\": "
			    "\".\" and \"..\" segments are not allowed, got \"/a/./b\"");
}

static void test_path_with_trailing_dot_dot_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/a/..")));
	assert_contains(err, "field \"path\": \".\" and \"..\" segments are not allowed");
}

static void test_path_with_dot_dot_then_slash_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/../")));
	assert_contains(err, "field \"path\": \".\" and \"..\" segments are not allowed");
}

static void test_check_without_leading_slash_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("check", json_string("healthz")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"check\": "
			    "must start with '/', got \"healthz\"");
}

static void test_check_of_128_bytes_is_rejected(void **state)
{
	char *p = repeat('c', PS_PATH_MAX);

	p[0] = '/';
	assert_failed_empty(parse_third_with("check", json_string(p)));
	assert_contains(err, "field \"check\": 128 bytes, longer than the limit of 127");
	free(p);
}

static void test_check_with_space_is_rejected(void **state)
{
	assert_failed_empty(parse_third_with("check", json_string("/health z")));
	assert_contains(err, "field \"check\": byte 0x20 at offset 7");
}

/* ---- rules across records ---- */

static void test_duplicate_id_names_both_records(void **state)
{
	assert_failed_empty(parse_third_with("id", json_string("a1")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a1\"): field \"id\": "
			    "duplicate of instance #1");
}

static void test_same_path_with_other_name_names_both_records(void **state)
{
	assert_failed_empty(parse_third_with("path", json_string("/service1")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"name\": "
			    "\"service2\" differs from \"service1\" of instance #1 (id \"a1\") "
			    "at the same path \"/service1\"; a service is one name+path pair");
}

static void test_same_name_with_other_path_names_both_records(void **state)
{
	assert_failed_empty(parse_third_with("name", json_string("service1")));
	assert_string_equal(err, SOURCE ": instance #3 (id \"a3\"): field \"path\": "
			    "\"/service2\" differs from \"/service1\" of instance #1 (id \"a1\") "
			    "with the same name \"service1\"; a service is one name+path pair");
}

/* ---- error reporting ---- */

static void test_error_is_truncated_to_the_buffer(void **state)
{
	char small[16];
	const char *text = "[1]";

	memset(small, 'x', sizeof(small));
	assert_int_equal(registry_parse(text, strlen(text), SOURCE, &reg, small, sizeof(small)),
			 -1);
	assert_string_equal(small, "registry.json: ");
}

static void test_null_error_buffer_is_allowed(void **state)
{
	const char *text = "[1]";

	assert_int_equal(registry_parse(text, strlen(text), SOURCE, &reg, NULL, 0), -1);
	assert_null(reg.inst);
}

/* ---- files ---- */

static void test_load_missing_file_names_path_and_reason(void **state)
{
	reg.n = 5;
	assert_int_equal(registry_load_file("/nonexistent/registry.json", &reg, err,
					    sizeof(err)), -1);
	assert_int_equal(reg.n, 0);
	assert_string_equal(err, "/nonexistent/registry.json: cannot open: "
			    "No such file or directory");
}

static void test_load_directory_is_rejected(void **state)
{
	assert_int_equal(registry_load_file("/tmp", &reg, err, sizeof(err)), -1);
	assert_string_equal(err, "/tmp: not a regular file");
}

/* Writes `text` to a new temporary file; its path goes to `path`. */
static void write_temp(char path[64], const char *text)
{
	int fd;

	snprintf(path, 64, "/tmp/test_registry.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void test_load_file_reads_registry(void **state)
{
	char path[64];
	json_t *doc = valid_document();
	char *text = json_dumps(doc, JSON_INDENT(2));

	write_temp(path, text);
	assert_int_equal(registry_load_file(path, &reg, err, sizeof(err)), 0);
	unlink(path);
	assert_int_equal(reg.n, 3);
	assert_string_equal(reg.inst[2].path, "/service2");
	free(text);
	json_decref(doc);
}

static void test_load_file_error_names_the_file(void **state)
{
	char path[64], want[128];

	write_temp(path, "[{\"id\": \"a1\", \"name\": \"s\", \"path\": \"s\", "
			 "\"host\": \"h\", \"port\": 1}]");
	assert_int_equal(registry_load_file(path, &reg, err, sizeof(err)), -1);
	unlink(path);
	snprintf(want, sizeof(want), "%s: instance #1 (id \"a1\"): field \"path\": "
		 "must start with '/', got \"s\"", path);
	assert_string_equal(err, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_teardown(fn, teardown)
		T(test_object_form_reads_every_field),
		T(test_bare_array_form_is_accepted),
		T(test_records_keep_document_order),
		T(test_absent_address_and_check_are_zero_and_empty),
		T(test_empty_instances_array_is_valid),
		T(test_empty_bare_array_is_valid),
		T(test_unknown_fields_are_ignored),
		T(test_trailing_slash_is_removed_from_path),
		T(test_root_path_stays_root),
		T(test_paths_differing_by_trailing_slash_are_one_service),
		T(test_dots_inside_a_segment_are_allowed),
		T(test_path_of_127_bytes_is_accepted),
		T(test_id_of_63_bytes_is_accepted),
		T(test_port_limits_1_and_65535_are_accepted),
		T(test_address_is_stored_in_network_order),
		T(test_check_with_query_is_kept_verbatim),
		T(test_same_service_on_two_hosts_is_valid),
		T(test_max_instances_are_accepted),
		T(test_syntax_error_names_line_and_column),
		T(test_empty_text_is_a_syntax_error),
		T(test_duplicate_json_key_is_rejected),
		T(test_top_level_string_is_rejected),
		T(test_top_level_number_is_rejected),
		T(test_top_level_null_is_rejected),
		T(test_object_without_instances_is_rejected),
		T(test_instances_that_is_not_an_array_is_rejected),
		T(test_record_that_is_not_an_object_is_rejected),
		T(test_more_than_max_instances_is_rejected),
		T(test_document_over_16_mib_is_rejected),
		T(test_port_as_string_is_rejected),
		T(test_port_as_numeric_string_is_rejected),
		T(test_port_zero_is_rejected),
		T(test_port_65536_is_rejected),
		T(test_negative_port_is_rejected),
		T(test_fractional_port_is_rejected),
		T(test_huge_port_integer_is_rejected),
		T(test_huge_port_real_is_rejected),
		T(test_each_required_field_must_be_present),
		T(test_missing_id_names_the_record_by_index),
		T(test_empty_name_is_rejected),
		T(test_non_string_host_is_rejected),
		T(test_null_optional_field_is_rejected),
		T(test_id_of_64_bytes_is_rejected),
		T(test_host_with_space_is_rejected),
		T(test_name_with_non_ascii_is_rejected),
		T(test_long_value_is_shortened_in_error),
		T(test_invalid_address_is_rejected),
		T(test_host_name_as_address_is_rejected),
		T(test_ipv6_address_is_rejected),
		T(test_unspecified_address_is_rejected),
		T(test_multicast_address_is_rejected),
		T(test_path_without_leading_slash_is_rejected),
		T(test_path_of_128_bytes_is_rejected),
		T(test_path_with_query_is_rejected),
		T(test_path_with_fragment_is_rejected),
		T(test_path_with_percent_escape_is_rejected),
		T(test_path_with_space_is_rejected),
		T(test_path_with_control_byte_is_rejected),
		T(test_path_with_empty_segment_is_rejected),
		T(test_path_of_two_slashes_is_rejected),
		T(test_path_with_dot_segment_is_rejected),
		T(test_path_with_trailing_dot_dot_is_rejected),
		T(test_path_with_dot_dot_then_slash_is_rejected),
		T(test_check_without_leading_slash_is_rejected),
		T(test_check_of_128_bytes_is_rejected),
		T(test_check_with_space_is_rejected),
		T(test_duplicate_id_names_both_records),
		T(test_same_path_with_other_name_names_both_records),
		T(test_same_name_with_other_path_names_both_records),
		T(test_error_is_truncated_to_the_buffer),
		T(test_null_error_buffer_is_allowed),
		T(test_load_missing_file_names_path_and_reason),
		T(test_load_directory_is_rejected),
		T(test_load_file_reads_registry),
		T(test_load_file_error_names_the_file),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
