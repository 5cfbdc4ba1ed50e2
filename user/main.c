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

#include "admin.h"
#include "controller.h"
#include "datapath.h"
#include "health.h"
#include "log.h"
#include "proxy.h"
#include "router.h"
#include "routes.h"
#include "source.h"
#include "status.h"
#include "upgrade.h"
#include "util.h"

#define DEFAULT_LISTEN		"0.0.0.0:8080"
#define DEFAULT_REGISTRY	"/etc/pathsplice/registry.json"
#define DEFAULT_PIN_DIR		"/sys/fs/bpf/pathsplice"

/* 0 running; 1 stop accepting and drain; 2 stop now */
static volatile sig_atomic_t stop_flag;
static struct controller *reload_ctl;

static void on_signal(int sig)
{
	switch (sig) {
	case SIGHUP:
		if (reload_ctl)
			controller_reload(reload_ctl);
		break;
	case SIGINT:	/* Ctrl-C twice: do not wait */
		stop_flag = stop_flag ? 2 : 1;
		break;
	case SIGQUIT:
		stop_flag = 2;
		break;
	default:
		if (!stop_flag)
			stop_flag = 1;
		break;
	}
}

/* Upgrades: the new daemon's side, called once its BPF object is loaded. */
struct takeover {
	const char *pin_dir;
	struct proxy_opts *po;
};

static int take_over(void *arg)
{
	struct takeover *t = arg;
	int lfd = -1, old_pid = 0;
	int r = upgrade_request(t->pin_dir, &t->po->listen, &lfd, &old_pid);

	if (r < 0)
		return -1;
	if (r > 0)
		t->po->listen_fd = lfd;
	return 0;
}

/* The running daemon's side: hand the listener over and drain. */
struct handover {
	int cfd;
	const char *pin_dir;
	struct proxy_opts *po;
	struct proxy *px;
	struct datapath *dp;
	struct admin **admin;		/* stopped at the hand-over: the new daemon answers */
	bool done;
};

static int release_pins(void *arg)
{
	return datapath_handover(arg);
}

static void on_upgrade(void *arg)
{
	struct handover *h = arg;

	if (h->done || !upgrade_serve(h->cfd, h->pin_dir, &h->po->listen, proxy_listen_fd(h->px),
				      release_pins, h->dp))
		return;
	h->done = true;
	pr_info("upgrade: a new pathsplice took over the listener: draining");
	admin_stop(*h->admin);
	*h->admin = NULL;
	if (!stop_flag)
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
		"  check      validate a registry and show what this host would serve\n"
		"             (pathsplice check --help)\n"
		"  status     services, instances, health and counters of a running daemon\n"
		"             (pathsplice status --help)\n"
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
		"service's instances on this host that are up.\n"
		"\n"
		"where:\n"
		"  --listen ADDR:PORT      address to serve on (default %s)\n"
		"  --admin ADDR:PORT|off   admin endpoint: /load /culprit /stats /metrics\n"
		"                          (default %s; an address other than loopback\n"
		"                          only when named, e.g. 0.0.0.0:9180)\n"
		"  --pin-dir DIR           where BPF maps and programs are pinned\n"
		"                          (default %s)\n"
		"\n"
		"registry:\n"
		"  --registry SPEC         where the registry is (default %s):\n"
		"                            a JSON file, re-read when it changes;\n"
		"                            http://HOST:PORT/PATH or https://..., polled;\n"
		"                            etcd://HOST:PORT/PREFIX/, one instance per key\n"
		"  --host NAME             serve the registry's instances of this host\n"
		"                          (default: this machine's hostname)\n"
		"  --poll-interval DUR     HTTP registry poll interval (default 2s)\n"
		"  --drain-timeout DUR     time connections to a removed instance, or all of\n"
		"                          them after SIGTERM, get to finish (default 30s)\n"
		"\n"
		"health:\n"
		"  --check-interval DUR    check every instance this often (default 2s):\n"
		"                          a TCP connect, or GET of the record's \"check\" path\n"
		"                          answering 2xx/3xx\n"
		"  --check-timeout DUR     a check not done by then fails (default 2s)\n"
		"  --fall N                failed checks in a row that take an instance down\n"
		"                          (default 3); a refused or timed-out connect from the\n"
		"                          data path takes it down at once\n"
		"  --rise N                passed checks in a row that bring it back (default 2)\n"
		"\n"
		"connections:\n"
		"  --max-head BYTES        request head limit, 431 beyond (default 8192)\n"
		"  --head-timeout DUR      time allowed for a request head, 408 after (default 10s)\n"
		"  --connect-timeout DUR   time allowed to connect to an instance before the\n"
		"                          next one is tried (default 2s)\n"
		"  --fin-timeout DUR       time a half-closed connection may stay open (default 60s)\n"
		"  --idle-timeout DUR|off  a keep-alive connection with no request for this long\n"
		"                          is closed, and so is an exchange on which nothing\n"
		"                          moves for this long, tunnels excepted (default 60s)\n"
		"  --response-timeout DUR|off\n"
		"                          a request the instance has whole and has not begun\n"
		"                          to answer for this long gets 504 (default 60s)\n"
		"  --max-conns N           connections spliced at once; more are relayed in\n"
		"                          userspace (default %d)\n"
		"  --flow-limit BYTES      bytes the kernel may queue for a slow reader before\n"
		"                          the connection is paused (default 262144)\n"
		"  --direct on|off         same-host instances: their sendmsg writes responses\n"
		"                          into the client socket, and requests without a body\n"
		"                          go into theirs (sockops on the cgroup v2 root; on)\n"
		"  --direct-callers on|off same-host callers (processes in this network\n"
		"                          namespace): requests go from their sendmsg into the\n"
		"                          instance's socket, responses into theirs, with no\n"
		"                          TCP in between (needs --direct on; on)\n"
		"\n"
		"  -v, --verbose           more logging (twice: debug, with libbpf's log)\n"
		"  -q, --quiet             warnings and errors only\n"
		"  -h, --help              this text\n"
		"\n"
		"DUR is a number with an optional unit: ms, s (default), m.\n"
		"\n"
		"signals:\n"
		"  SIGTERM, SIGINT   stop accepting, let open connections finish (at most\n"
		"                    --drain-timeout), detach and unpin; a second SIGINT or a\n"
		"                    SIGQUIT stops at once\n"
		"  SIGHUP            read the registry again now\n"
		"\n"
		"upgrade: start the new binary with the same --listen and --pin-dir while the\n"
		"old one runs. It takes over the old one's listening socket (no connection is\n"
		"refused); the old one stops accepting, drains and exits by itself.\n"
		"\n"
		"files: /run/lock/pathsplice<pin dir>.lock (one daemon per pin dir) and\n"
		"/run/pathsplice<pin dir>.sock (the upgrade control socket), '/' as '_'.\n"
		"\n"
		"Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start or fails, 2 on\n"
		"a usage error.\n",
		DEFAULT_LISTEN, ADMIN_DEFAULT_ADDR, DEFAULT_PIN_DIR, DEFAULT_REGISTRY,
		PS_DEFAULT_MAX_CONNS / 2);
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

static int parse_on_off(const char *s, bool *out)
{
	if (strcmp(s, "on") && strcmp(s, "off"))
		return -1;
	*out = strcmp(s, "on") == 0;
	return 0;
}

static int set_host(char *host, size_t len, const char *arg)
{
	if (strlen(arg) >= len || !*arg) {
		fprintf(stderr, "pathsplice: --host: expected 1..%zu bytes\n", len - 1);
		return -1;
	}
	snprintf(host, len, "%s", arg);
	return 0;
}

static int default_host(char *host, size_t len)
{
	if (!*host && gethostname(host, len)) {
		fprintf(stderr, "pathsplice: cannot read the hostname: %s\n", strerror(errno));
		return -1;
	}
	host[len - 1] = '\0';
	return 0;
}

/* The controller has a new table: apply it on the proxy's thread. */
struct registry_hook {
	struct controller *ctl;
	struct router *router;
};

static void on_registry(void *arg)
{
	struct registry_hook *h = arg;
	struct routes rt = { 0 };

	if (!controller_take(h->ctl, &rt))
		return;
	if (router_update(h->router, &rt))
		pr_err("registry: the new table could not be applied in full");
	routes_free(&rt);
}

/* What only the daemon knows, for /stats: read from the admin's thread. */
struct admin_hook {
	struct controller *ctl;
	struct proxy *px;
};

static void admin_extra(json_t *root, void *arg)
{
	struct admin_hook *h = arg;
	struct controller_stats cs = controller_stats(h->ctl);
	const struct proxy_stats *ps = proxy_stats(h->px);
	json_t *proxy, *answers = json_object();
	char status[8];

	json_object_set_new(root, "registry", json_pack("{s:s, s:I, s:I}",
		"source", controller_source(h->ctl), "tables", (json_int_t)cs.tables,
		"errors", (json_int_t)cs.errors));
	proxy = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		"accepted", (json_int_t)__atomic_load_n(&ps->accepted, __ATOMIC_RELAXED),
		"spliced", (json_int_t)__atomic_load_n(&ps->spliced, __ATOMIC_RELAXED),
		"relayed", (json_int_t)__atomic_load_n(&ps->relayed, __ATOMIC_RELAXED),
		"reused", (json_int_t)__atomic_load_n(&ps->reused, __ATOMIC_RELAXED),
		"handbacks", (json_int_t)__atomic_load_n(&ps->handbacks, __ATOMIC_RELAXED),
		"reroutes", (json_int_t)__atomic_load_n(&ps->reroutes, __ATOMIC_RELAXED),
		"reconnects", (json_int_t)__atomic_load_n(&ps->reconnects, __ATOMIC_RELAXED),
		"idle_closed", (json_int_t)__atomic_load_n(&ps->idle_closed, __ATOMIC_RELAXED),
		"response_timeouts",
		(json_int_t)__atomic_load_n(&ps->response_timeouts, __ATOMIC_RELAXED),
		"stalls_closed", (json_int_t)__atomic_load_n(&ps->stalls_closed, __ATOMIC_RELAXED),
		"connect_failures",
		(json_int_t)__atomic_load_n(&ps->connect_failures, __ATOMIC_RELAXED));
	for (int i = 0; answers && i < PROXY_ANSWER_KINDS; i++) {
		snprintf(status, sizeof(status), "%u", proxy_answer_status[i]);
		json_object_set_new(answers, status, json_integer((json_int_t)__atomic_load_n(
			&ps->answers[i], __ATOMIC_RELAXED)));
	}
	if (proxy && answers)
		json_object_set_new(proxy, "answers", answers);
	else
		json_decref(answers);
	json_object_set_new(root, "proxy", proxy);
}

/*
 * The admin endpoint reveals the host's processes: it binds to an address
 * other than loopback only when --admin names that address ("0.0.0.0:9180"
 * included); ":9180" or "*:9180" is refused rather than taken as "every
 * address".
 */
static int parse_admin(const char *s, struct sockaddr_in *out)
{
	if (s[0] == ':' || !strncmp(s, "*:", 2)) {
		fprintf(stderr, "pathsplice: --admin %s would listen on every address; the admin "
			"endpoint shows this host's processes: name the address (e.g. "
			"127.0.0.1%s, or 0.0.0.0%s to mean it)\n", s, strchr(s, ':'), strchr(s, ':'));
		return -1;
	}
	if (parse_addr(s, out)) {
		fprintf(stderr, "pathsplice: --admin: expected ADDR:PORT (IPv4) or off, got '%s'\n", s);
		return -1;
	}
	if ((ntohl(out->sin_addr.s_addr) >> 24) != 127)
		pr_warn("admin endpoint on %s, not loopback: it shows this host's processes and "
			"load to whoever reaches it", s);
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_REGISTRY, O_HOST, O_PIN_DIR, O_MAX_HEAD, O_HEAD_TIMEOUT,
	       O_CONNECT_TIMEOUT, O_FIN_TIMEOUT, O_MAX_CONNS, O_FLOW_LIMIT, O_POLL_INTERVAL,
	       O_DRAIN_TIMEOUT, O_CHECK_INTERVAL, O_CHECK_TIMEOUT, O_FALL, O_RISE, O_ADMIN,
	       O_DIRECT, O_DIRECT_CALLERS, O_IDLE_TIMEOUT, O_RESPONSE_TIMEOUT };
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "registry", required_argument, NULL, O_REGISTRY },
		{ "host", required_argument, NULL, O_HOST },
		{ "pin-dir", required_argument, NULL, O_PIN_DIR },
		{ "max-head", required_argument, NULL, O_MAX_HEAD },
		{ "head-timeout", required_argument, NULL, O_HEAD_TIMEOUT },
		{ "connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT },
		{ "fin-timeout", required_argument, NULL, O_FIN_TIMEOUT },
		{ "idle-timeout", required_argument, NULL, O_IDLE_TIMEOUT },
		{ "response-timeout", required_argument, NULL, O_RESPONSE_TIMEOUT },
		{ "max-conns", required_argument, NULL, O_MAX_CONNS },
		{ "flow-limit", required_argument, NULL, O_FLOW_LIMIT },
		{ "poll-interval", required_argument, NULL, O_POLL_INTERVAL },
		{ "drain-timeout", required_argument, NULL, O_DRAIN_TIMEOUT },
		{ "check-interval", required_argument, NULL, O_CHECK_INTERVAL },
		{ "check-timeout", required_argument, NULL, O_CHECK_TIMEOUT },
		{ "fall", required_argument, NULL, O_FALL },
		{ "rise", required_argument, NULL, O_RISE },
		{ "admin", required_argument, NULL, O_ADMIN },
		{ "direct", required_argument, NULL, O_DIRECT },
		{ "direct-callers", required_argument, NULL, O_DIRECT_CALLERS },
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
		.idle_timeout_ms = 60000,
		.response_timeout_ms = 60000,
		.linger_ms = 2000,
		.listen_fd = -1,
	};
	struct datapath_opts dopts = {
		.pin_dir = DEFAULT_PIN_DIR,
		.max_conns = PS_DEFAULT_MAX_CONNS,
		.fc_limit = 256 << 10,
		.direct = true,
		.callers = true,
	};
	const char *registry = DEFAULT_REGISTRY, *listen_s = DEFAULT_LISTEN;
	const char *admin_s = ADMIN_DEFAULT_ADDR;
	char host[PS_NAME_MAX] = "", err[1024];
	struct source_opts sopts = { .poll_ms = 2000 };
	struct sockaddr_in admin_addr;
	struct admin_hook ah;
	struct admin *admin = NULL;
	uint32_t drain_ms = 30000;
	struct health_opts hopts = { .interval_ms = 2000, .timeout_ms = 2000, .fall = 3, .rise = 2 };
	struct health *health = NULL;
	struct controller *ctl = NULL;
	struct registry_hook hook;
	struct takeover tko;
	struct handover ho = { .cfd = -1 };
	struct routes rt = { 0 };
	struct router router = { 0 };
	struct datapath dp = { .lock_fd = -1 };
	struct proxy *px = NULL;
	bool have_table;
	struct sigaction sa = { .sa_handler = on_signal };
	uint64_t v;
	int opt, li = 0, ret = 1;

	while ((opt = getopt_long(argc, argv, "vqh", longopts, &li)) != -1) {
		switch (opt) {
		case O_LISTEN:
			listen_s = optarg;
			break;
		case O_REGISTRY:
			registry = optarg;
			break;
		case O_HOST:
			if (set_host(host, sizeof(host), optarg))
				return 2;
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
		case O_FIN_TIMEOUT:
		case O_POLL_INTERVAL:
		case O_DRAIN_TIMEOUT:
		case O_CHECK_INTERVAL:
		case O_CHECK_TIMEOUT: {
			uint32_t *dst = opt == O_HEAD_TIMEOUT ? &po.head_timeout_ms :
					opt == O_CONNECT_TIMEOUT ? &po.connect_timeout_ms :
					opt == O_FIN_TIMEOUT ? &po.fin_timeout_ms :
					opt == O_POLL_INTERVAL ? &sopts.poll_ms :
					opt == O_CHECK_INTERVAL ? &hopts.interval_ms :
					opt == O_CHECK_TIMEOUT ? &hopts.timeout_ms : &drain_ms;

			if (parse_duration(optarg, dst) || *dst == 0) {
				fprintf(stderr, "pathsplice: --%s: expected a duration like 10s or 500ms\n",
					longopts[li].name);
				return 2;
			}
			break;
		}
		case O_IDLE_TIMEOUT:
		case O_RESPONSE_TIMEOUT: {
			uint32_t *dst = opt == O_IDLE_TIMEOUT ? &po.idle_timeout_ms :
					&po.response_timeout_ms;

			*dst = 0;
			if (strcmp(optarg, "off") && (parse_duration(optarg, dst) || !*dst)) {
				fprintf(stderr, "pathsplice: --%s: expected a duration like 60s, or off\n",
					longopts[li].name);
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
		case O_ADMIN:
			admin_s = optarg;
			break;
		case O_DIRECT:
		case O_DIRECT_CALLERS:
			if (parse_on_off(optarg, opt == O_DIRECT ? &dopts.direct : &dopts.callers)) {
				fprintf(stderr, "pathsplice: --%s: expected on or off\n", longopts[li].name);
				return 2;
			}
			break;
		case O_FALL:
		case O_RISE:
			if (parse_u64(optarg, 1, 100, &v)) {
				fprintf(stderr, "pathsplice: --%s: expected 1..100\n", longopts[li].name);
				return 2;
			}
			*(opt == O_FALL ? &hopts.fall : &hopts.rise) = v;
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
	if (strcmp(admin_s, "off") && parse_admin(admin_s, &admin_addr))
		return 2;
	if (default_host(host, sizeof(host)))
		return 1;
	log_setup_libbpf();

	/*
	 * The registry is read once before anything is attached. A file must be
	 * valid at start (a typo fails loudly, like `nginx -t`); a remote
	 * registry may be down: the daemon starts without routes, answers 503
	 * and applies the first good answer.
	 */
	ctl = controller_new(registry, host, &sopts, err, sizeof(err));
	if (!ctl) {
		pr_err("%s", err);
		return 1;
	}
	have_table = controller_read(ctl, &rt, err, sizeof(err)) == 0;
	if (!have_table && !strstr(registry, "://")) {
		pr_err("%s", err);
		goto out;
	}
	if (!have_table)
		pr_warn("%s; waiting for the registry, until then every request gets 503", err);
	else if (rt.n == 0)
		pr_warn("%s: no instance for host \"%s\": every request will get 404", registry, host);

	po.drain_ms = drain_ms;
	tko.pin_dir = dopts.pin_dir;
	tko.po = &po;
	dopts.before_pin = take_over;
	dopts.arg = &tko;
	if (datapath_open(&dp, &dopts))
		goto out;
	if (router_init(&router, &dp, drain_ms))
		goto out;
	if (have_table && router_update(&router, &rt))
		goto out;
	health = health_new(&router, &hopts);
	if (!health)
		goto out;
	px = proxy_new(&po, &dp, &router);
	if (px) {
		datapath_listener(&dp, proxy_listen_fd(px), dopts.callers);
		proxy_set_health(px, health);
		if (proxy_add_hook(px, health_fd(health), health_run, health))
			goto out;
	}
	hook.ctl = ctl;
	hook.router = &router;
	if (!px || proxy_add_hook(px, controller_fd(ctl), on_registry, &hook) ||
	    controller_start(ctl))
		goto out;

	ho.cfd = upgrade_listen(dopts.pin_dir);
	ho.pin_dir = dopts.pin_dir;
	ho.po = &po;
	ho.px = px;
	ho.dp = &dp;
	if (ho.cfd >= 0 && proxy_add_hook(px, ho.cfd, on_upgrade, &ho))
		goto out;

	if (strcmp(admin_s, "off")) {
		struct stats_maps maps = {
			.services_fd = dp.services_fd,
			.instances_fd = dp.instances_fd,
			.inst_stats_fd = dp.inst_stats_fd,
			.prog_fd = dp.prog_fd,
		};

		ah.ctl = ctl;
		ah.px = px;
		admin = admin_start(&admin_addr, &maps, admin_extra, &ah, err, sizeof(err));
		if (admin)
			pr_info("admin endpoint on http://%s", admin_s);
		else	/* the data path matters more than its dashboard */
			pr_warn("admin endpoint %s: %s; running without it", admin_s, err);
	}
	ho.admin = &admin;

	reload_ctl = ctl;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	pr_info("host %s, registry %s, pins in %s", host, registry, dopts.pin_dir);
	ret = proxy_run(px, &stop_flag) ? 1 : 0;
	if (!ret)
		pr_info("stopping");
out:
	reload_ctl = NULL;
	if (ho.done)
		close(ho.cfd);	/* its path belongs to the new daemon now */
	else
		upgrade_close(ho.cfd, dopts.pin_dir);
	admin_stop(admin);	/* its threads read the maps and the controller */
	controller_free(ctl);	/* first: its thread must not outlive what it hands to */
	proxy_free(px);
	health_free(health);
	router_free(&router);
	routes_free(&rt);
	datapath_close(&dp);
	return ret;
}

static void usage_check(FILE *f)
{
	fprintf(f,
		"usage: pathsplice check [--registry SPEC] [--host NAME] [--timeout DUR]\n"
		"\n"
		"Read and validate a registry (a file, http://, https:// or etcd://, as for\n"
		"`pathsplice run`) and print what this host would serve: each service, its\n"
		"path and its instances. Changes nothing.\n"
		"\n"
		"options:\n"
		"  --registry SPEC    the registry (default %s)\n"
		"  --host NAME        the host whose instances are shown (default: hostname)\n"
		"  --timeout DUR      how long a remote registry may take (default 5s)\n"
		"  -h, --help         this text\n"
		"\n"
		"Exit status: 0 when the registry is valid, 1 when it is not or cannot be\n"
		"read (the reason names the source, record and field), 2 on a usage error.\n",
		DEFAULT_REGISTRY);
}

static int cmd_check(int argc, char **argv)
{
	enum { O_REGISTRY = 256, O_HOST, O_TIMEOUT };
	static const struct option longopts[] = {
		{ "registry", required_argument, NULL, O_REGISTRY },
		{ "host", required_argument, NULL, O_HOST },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *registry = DEFAULT_REGISTRY;
	struct source_opts sopts = { .timeout_ms = 5000 };
	char host[PS_NAME_MAX] = "", err[1024], a[PS_ADDR_STRLEN];
	struct routes rt = { 0 };
	struct controller *ctl;
	size_t i, j, n_inst = 0;
	int opt;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case O_REGISTRY:
			registry = optarg;
			break;
		case O_HOST:
			if (set_host(host, sizeof(host), optarg))
				return 2;
			break;
		case O_TIMEOUT:
			if (parse_duration(optarg, &sopts.timeout_ms) || !sopts.timeout_ms) {
				fprintf(stderr, "pathsplice: --timeout: expected a duration like 5s\n");
				return 2;
			}
			break;
		case 'h':
			usage_check(stdout);
			return 0;
		default:
			usage_check(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pathsplice check: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (default_host(host, sizeof(host)))
		return 1;
	log_threshold = LOG_WARN;
	ctl = controller_new(registry, host, &sopts, err, sizeof(err));
	if (!ctl || controller_read(ctl, &rt, err, sizeof(err))) {
		fprintf(stderr, "pathsplice: %s\n", err);
		controller_free(ctl);
		return 1;
	}
	controller_free(ctl);
	for (i = 0; i < rt.n; i++)
		n_inst += rt.svc[i].n_inst;
	printf("registry %s is valid: host %s serves %zu service%s, %zu instance%s\n", registry,
	       host, rt.n, rt.n == 1 ? "" : "s", n_inst, n_inst == 1 ? "" : "s");
	for (i = 0; i < rt.n; i++) {
		const struct route_service *rs = &rt.svc[i];

		printf("  %s %s\n", rs->path, rs->name);
		for (j = 0; j < rs->n_inst; j++) {
			printf("    %-24s %s  check %s\n", rs->inst[j].id,
			       ps_addr_str(rs->inst[j].addr, htons(rs->inst[j].port), a, sizeof(a)),
			       rs->inst[j].check[0] ? rs->inst[j].check : "tcp");
		}
	}
	routes_free(&rt);
	return 0;
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
	if (!strcmp(cmd, "check"))
		return cmd_check(argc - 1, argv + 1);
	if (!strcmp(cmd, "status"))
		return cmd_status(argc - 1, argv + 1);
	fprintf(stderr, "pathsplice: unknown command '%s'\n", cmd);
	usage_main(stderr);
	return 2;
}
