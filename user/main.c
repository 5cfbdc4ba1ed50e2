// SPDX-License-Identifier: GPL-2.0
/*
 * pathsplice — one HTTP endpoint per host that routes requests by path
 * prefix to the instances of each service, splicing client and backend
 * sockets in the kernel.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datapath.h"
#include "log.h"
#include "proxy.h"
#include "registry.h"
#include "router.h"
#include "routes.h"

#define DEFAULT_LISTEN		"0.0.0.0:8080"
#define DEFAULT_REGISTRY	"/etc/pathsplice/registry.json"
#define DEFAULT_PIN_DIR		"/sys/fs/bpf/pathsplice"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	stop_flag = 1;
}

static void usage_main(FILE *f)
{
	fprintf(f,
		"usage: pathsplice COMMAND [OPTIONS]\n"
		"\n"
		"Routes HTTP requests by URL path prefix to the instances of each service on\n"
		"this host, splicing client and backend sockets in the kernel.\n"
		"\n"
		"commands:\n"
		"  run        start the balancer (pathsplice run --help)\n"
		"  version    print the version\n"
		"  help       this text\n");
}

static void usage_run(FILE *f)
{
	fprintf(f,
		"usage: pathsplice run [OPTIONS]\n"
		"\n"
		"Serve HTTP on one address, routing each request by the longest whole-segment\n"
		"prefix of its path to a service of the registry, round-robin among the\n"
		"service's instances on this host.\n"
		"\n"
		"options:\n"
		"  --listen ADDR:PORT      address to serve on (default %s)\n"
		"  --registry PATH         registry JSON file (default %s)\n"
		"  --host NAME             serve the registry's instances of this host\n"
		"                          (default: this machine's hostname)\n"
		"  --pin-dir DIR           where BPF maps and programs are pinned\n"
		"                          (default %s)\n"
		"  --max-head BYTES        request head limit, 431 beyond (default 8192)\n"
		"  --head-timeout DUR      time allowed for a request head, 408 after (default 10s)\n"
		"  --connect-timeout DUR   time allowed to connect to an instance before the\n"
		"                          next one is tried (default 2s)\n"
		"  --fin-timeout DUR       time a half-closed connection may stay open (default 60s)\n"
		"  --max-conns N           connections spliced at once; more are relayed in\n"
		"                          userspace (default %d)\n"
		"  --flow-limit BYTES      bytes the kernel may queue for a slow reader before\n"
		"                          the connection is paused (default 1048576)\n"
		"  -v, --verbose           more logging (twice: debug, with libbpf's log)\n"
		"  -q, --quiet             warnings and errors only\n"
		"  -h, --help              this text\n"
		"\n"
		"DUR is a number with an optional unit: ms, s (default), m.\n"
		"Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start or fails, 2 on\n"
		"a usage error.\n",
		DEFAULT_LISTEN, DEFAULT_REGISTRY, DEFAULT_PIN_DIR, PS_DEFAULT_MAX_CONNS / 2);
}

static int parse_addr(const char *s, struct sockaddr_in *out)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, colon - s);
	host[colon - s] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return -1;
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	out->sin_port = htons(port);
	if (!*host || !strcmp(host, "*"))
		out->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
		return -1;
	return 0;
}

/* "10s", "500ms", "2m", "3" (seconds) -> milliseconds */
static int parse_duration(const char *s, uint32_t *ms)
{
	char *end;
	double v = strtod(s, &end);
	double mult = 1000;

	if (end == s || v < 0)
		return -1;
	if (!strcmp(end, "ms"))
		mult = 1;
	else if (!strcmp(end, "m"))
		mult = 60000;
	else if (*end && strcmp(end, "s"))
		return -1;
	if (v * mult > 86400000.0)
		return -1;
	*ms = (uint32_t)(v * mult);
	return 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_REGISTRY, O_HOST, O_PIN_DIR, O_MAX_HEAD, O_HEAD_TIMEOUT,
	       O_CONNECT_TIMEOUT, O_FIN_TIMEOUT, O_MAX_CONNS, O_FLOW_LIMIT };
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "registry", required_argument, NULL, O_REGISTRY },
		{ "host", required_argument, NULL, O_HOST },
		{ "pin-dir", required_argument, NULL, O_PIN_DIR },
		{ "max-head", required_argument, NULL, O_MAX_HEAD },
		{ "head-timeout", required_argument, NULL, O_HEAD_TIMEOUT },
		{ "connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT },
		{ "fin-timeout", required_argument, NULL, O_FIN_TIMEOUT },
		{ "max-conns", required_argument, NULL, O_MAX_CONNS },
		{ "flow-limit", required_argument, NULL, O_FLOW_LIMIT },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct proxy_opts po = {
		.head_max = 8192,
		.resp_head_max = 65536,
		.head_timeout_ms = 10000,
		.connect_timeout_ms = 2000,
		.fin_timeout_ms = 60000,
		.linger_ms = 2000,
	};
	struct datapath_opts dopts = {
		.pin_dir = DEFAULT_PIN_DIR,
		.max_conns = PS_DEFAULT_MAX_CONNS,
		.fc_limit = 1 << 20,
	};
	const char *registry = DEFAULT_REGISTRY, *listen_s = DEFAULT_LISTEN;
	char host[PS_NAME_MAX] = "", err[1024];
	struct registry reg = { 0 };
	struct routes rt = { 0 };
	struct router router = { 0 };
	struct datapath dp;
	struct proxy *px = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	uint64_t v;
	int opt, ret = 1;

	while ((opt = getopt_long(argc, argv, "vqh", longopts, NULL)) != -1) {
		switch (opt) {
		case O_LISTEN:
			listen_s = optarg;
			break;
		case O_REGISTRY:
			registry = optarg;
			break;
		case O_HOST:
			if (strlen(optarg) >= sizeof(host) || !*optarg) {
				fprintf(stderr, "pathsplice: --host: expected 1..%zu bytes\n",
					sizeof(host) - 1);
				return 2;
			}
			snprintf(host, sizeof(host), "%s", optarg);
			break;
		case O_PIN_DIR:
			if (strlen(optarg) >= 200 || optarg[0] != '/') {
				fprintf(stderr, "pathsplice: --pin-dir: expected an absolute path\n");
				return 2;
			}
			dopts.pin_dir = optarg;
			break;
		case O_MAX_HEAD:
			if (parse_u64(optarg, 256, 65536, &v)) {
				fprintf(stderr, "pathsplice: --max-head: expected 256..65536 bytes\n");
				return 2;
			}
			po.head_max = v;
			break;
		case O_HEAD_TIMEOUT:
		case O_CONNECT_TIMEOUT:
		case O_FIN_TIMEOUT: {
			uint32_t *dst = opt == O_HEAD_TIMEOUT ? &po.head_timeout_ms :
					opt == O_CONNECT_TIMEOUT ? &po.connect_timeout_ms :
					&po.fin_timeout_ms;

			if (parse_duration(optarg, dst) || *dst == 0) {
				fprintf(stderr, "pathsplice: %s: expected a duration like 10s or 500ms\n",
					argv[optind - 1]);
				return 2;
			}
			break;
		}
		case O_MAX_CONNS:
			if (parse_u64(optarg, 1, 1 << 20, &v)) {
				fprintf(stderr, "pathsplice: --max-conns: expected 1..1048576\n");
				return 2;
			}
			dopts.max_conns = v * 2;
			break;
		case O_FLOW_LIMIT:
			if (parse_u64(optarg, 65536, 1ULL << 30, &v)) {
				fprintf(stderr, "pathsplice: --flow-limit: expected 65536..1073741824\n");
				return 2;
			}
			dopts.fc_limit = v;
			break;
		case 'v':
			log_threshold = log_threshold < LOG_INFO ? LOG_INFO : LOG_DEBUG;
			break;
		case 'q':
			log_threshold = LOG_WARN;
			break;
		case 'h':
			usage_run(stdout);
			return 0;
		default:
			usage_run(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pathsplice run: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (parse_addr(listen_s, &po.listen)) {
		fprintf(stderr, "pathsplice: --listen: expected ADDR:PORT (IPv4), got '%s'\n", listen_s);
		return 2;
	}
	if (!*host && gethostname(host, sizeof(host))) {
		fprintf(stderr, "pathsplice: cannot read the hostname: %s\n", strerror(errno));
		return 1;
	}
	host[sizeof(host) - 1] = '\0';
	log_setup_libbpf();

	if (registry_load_file(registry, &reg, err, sizeof(err))) {
		pr_err("%s", err);
		return 1;
	}
	if (routes_build(&reg, host, &rt, err, sizeof(err))) {
		pr_err("%s", err);
		registry_free(&reg);
		return 1;
	}
	registry_free(&reg);
	if (rt.n == 0)
		pr_warn("%s: no instance for host \"%s\": every request will get 404", registry, host);

	if (datapath_open(&dp, &dopts))
		goto out;
	if (router_apply(&router, &dp, &rt))
		goto out;
	px = proxy_new(&po, &dp, &router);
	if (!px)
		goto out;

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	pr_info("host %s, registry %s, pins in %s", host, registry, dopts.pin_dir);
	ret = proxy_run(px, &stop_flag) ? 1 : 0;
	if (!ret)
		pr_info("stopping");
out:
	proxy_free(px);
	router_free(&router);
	routes_free(&rt);
	datapath_close(&dp);
	return ret;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;

	if (!cmd || !strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		usage_main(cmd ? stdout : stderr);
		return cmd ? 0 : 2;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("pathsplice %s\n", PS_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_run(argc - 1, argv + 1);
	fprintf(stderr, "pathsplice: unknown command '%s'\n", cmd);
	usage_main(stderr);
	return 2;
}
