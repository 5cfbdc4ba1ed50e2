// SPDX-License-Identifier: GPL-2.0
/*
 * `pathsplice status` (see status.h): the stats document of a running
 * daemon, from its pinned maps (read-only, through the same collector as the
 * admin endpoint) or from its admin endpoint's /stats, shown as a table or
 * as the JSON itself.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <curl/curl.h>
#include <jansson.h>

#include "admin.h"
#include "source_net.h"
#include "stats.h"
#include "status.h"

#define DEFAULT_PIN_DIR		"/sys/fs/bpf/pathsplice"
#define STATUS_TIMEOUT_MS	5000
#define STATUS_MAX_BODY		(64u << 20)

#ifndef PS_VERSION
#define PS_VERSION "dev"
#endif

static void usage_status(FILE *f)
{
	fprintf(f,
		"usage: pathsplice status [--pin-dir DIR | --admin ADDR:PORT] [--json]\n"
		"\n"
		"Show the services and instances a running pathsplice serves: state, reason\n"
		"of the last health change, connections, requests, bytes each way, retries.\n"
		"\n"
		"options:\n"
		"  --pin-dir DIR       read the maps the daemon pinned in DIR (default %s;\n"
		"                      needs root or CAP_BPF)\n"
		"  --admin ADDR:PORT   ask the daemon's admin endpoint instead\n"
		"                      (GET http://ADDR:PORT/stats; e.g. %s)\n"
		"  --json              print the stats document as JSON, not as a table\n"
		"  -h, --help          this text\n"
		"\n"
		"Exit status: 0 when shown, 1 when no daemon answers (nothing pinned in DIR,\n"
		"admin endpoint unreachable) or its state cannot be read, 2 on a usage error.\n",
		DEFAULT_PIN_DIR, ADMIN_DEFAULT_ADDR);
}

/* Open a pinned object read-only (maps) or plain (the program). */
static int open_pin(const char *dir, const char *name, bool map, char *err, size_t errlen)
{
	LIBBPF_OPTS(bpf_obj_get_opts, opts, .file_flags = map ? BPF_F_RDONLY : 0);
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = bpf_obj_get_opts(path, &opts);
	if (fd >= 0)
		return fd;
	fd = -errno;
	if (fd == -ENOENT && access(dir, F_OK))
		snprintf(err, errlen, "no pathsplice is running with pin dir %s (it does not exist)",
			 dir);
	else if (fd == -ENOENT)
		snprintf(err, errlen, "no pathsplice is running with pin dir %s (no %s in it)",
			 dir, name);
	else if (fd == -EACCES || fd == -EPERM)
		snprintf(err, errlen, "cannot open %s: %s (reading BPF maps needs root or "
			 "CAP_BPF; or use --admin)", path, strerror(-fd));
	else
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(-fd));
	return fd;
}

static json_t *from_pins(const char *dir, char *err, size_t errlen)
{
	struct stats_maps m = { -1, -1, -1, -1 };
	json_t *root = NULL;
	char ignored[16];

	if ((m.services_fd = open_pin(dir, "services", true, err, errlen)) < 0 ||
	    (m.instances_fd = open_pin(dir, "instances", true, err, errlen)) < 0 ||
	    (m.inst_stats_fd = open_pin(dir, "inst_stats", true, err, errlen)) < 0)
		goto out;
	/* only for the uptime: without it, the rest still shows */
	m.prog_fd = open_pin(dir, "ps_verdict", false, ignored, sizeof(ignored));
	root = stats_collect(&m);
	if (!root && errno == EPROTO)
		snprintf(err, errlen, "the maps pinned in %s are not laid out as this pathsplice "
			 "(%s) expects: a daemon of another version? (try --admin)", dir,
			 PS_VERSION);
	else if (!root)
		snprintf(err, errlen, "cannot read the maps pinned in %s: %s", dir,
			 strerror(errno));
out:
	if (m.services_fd >= 0)
		close(m.services_fd);
	if (m.instances_fd >= 0)
		close(m.instances_fd);
	if (m.inst_stats_fd >= 0)
		close(m.inst_stats_fd);
	if (m.prog_fd >= 0)
		close(m.prog_fd);
	return root;
}

/* "ADDR:PORT" with a port 1..65535 (ADDR: an IPv4 address or a host name) */
static bool valid_hostport(const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || colon == s || strpbrk(s, "/?#@ "))
		return false;
	port = strtol(colon + 1, &end, 10);
	return colon[1] && !*end && port >= 1 && port <= 65535;
}

static json_t *from_admin(const char *hostport, char *err, size_t errlen)
{
	struct net_body body = { .max = STATUS_MAX_BODY };
	char url[300], errbuf[CURL_ERROR_SIZE], why[256];
	json_t *root = NULL;
	json_error_t jerr;
	long code = 0;
	CURLcode res;
	CURL *easy;

	snprintf(url, sizeof(url), "http://%s/stats", hostport);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(easy = curl_easy_init())) {
		snprintf(err, errlen, "cannot initialise libcurl");
		return NULL;
	}
	errbuf[0] = '\0';
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)STATUS_TIMEOUT_MS);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "pathsplice-status/" PS_VERSION);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, net_body_write);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
	res = curl_easy_perform(easy);
	if (res != CURLE_OK) {
		net_describe(easy, res, errbuf, &body, why, sizeof(why));
		snprintf(err, errlen, "admin endpoint %s is unreachable: %s (is pathsplice running "
			 "with --admin %s?)", url, why, hostport);
		goto out;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
	root = json_loadb(body.data ? body.data : "", body.len, 0, &jerr);
	if (code != 200) {
		const char *msg = json_string_value(json_object_get(root, "error"));

		snprintf(err, errlen, "%s answered %ld%s%s", url, code, msg ? ": " : "",
			 msg ? msg : "");
		json_decref(root);
		root = NULL;
	} else if (!json_is_object(root) || !json_is_array(json_object_get(root, "services"))) {
		snprintf(err, errlen, "%s answered something that is not pathsplice stats%s%s",
			 url, root ? "" : ": ", root ? "" : jerr.text);
		json_decref(root);
		root = NULL;
	}
out:
	net_body_free(&body);
	curl_easy_cleanup(easy);
	curl_global_cleanup();
	return root;
}

int cmd_status(int argc, char **argv)
{
	enum { O_PIN_DIR = 256, O_ADMIN, O_JSON };
	static const struct option longopts[] = {
		{ "pin-dir", required_argument, NULL, O_PIN_DIR },
		{ "admin", required_argument, NULL, O_ADMIN },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pin_dir = NULL, *admin = NULL;
	bool json = false;
	char err[1024];
	json_t *root;
	int opt;

	optind = 0;	/* getopt may have run for another command */
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case O_PIN_DIR:
			if (!*optarg || optarg[0] != '/' || strlen(optarg) >= 256) {
				fprintf(stderr, "pathsplice status: --pin-dir: expected an absolute "
					"path\n");
				return 2;
			}
			pin_dir = optarg;
			break;
		case O_ADMIN:
			if (!valid_hostport(optarg)) {
				fprintf(stderr, "pathsplice status: --admin: expected ADDR:PORT, got "
					"'%s'\n", optarg);
				return 2;
			}
			admin = optarg;
			break;
		case O_JSON:
			json = true;
			break;
		case 'h':
			usage_status(stdout);
			return 0;
		default:
			usage_status(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pathsplice status: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (pin_dir && admin) {
		fprintf(stderr, "pathsplice status: --pin-dir and --admin exclude each other\n");
		return 2;
	}
	err[0] = '\0';
	root = admin ? from_admin(admin, err, sizeof(err)) :
		       from_pins(pin_dir ? pin_dir : DEFAULT_PIN_DIR, err, sizeof(err));
	if (!root) {
		fprintf(stderr, "pathsplice status: %s\n", err);
		return 1;
	}
	if (json) {
		json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		fputc('\n', stdout);
	} else {
		stats_print_table(root, stdout);
	}
	json_decref(root);
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "pathsplice status: cannot write the output: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
