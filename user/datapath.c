// SPDX-License-Identifier: GPL-2.0
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/magic.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "datapath.h"
#include "log.h"
#include "splice.skel.h"

#define BPFFS "/sys/fs/bpf"

_Static_assert(sizeof(struct ps_conn) % 8 == 0, "array map values are 8-byte strided");
_Static_assert(sizeof(struct ps_instance) % 8 == 0, "array map values are 8-byte strided");

static int is_bpffs(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

static int ensure_bpffs(const char *pin_dir)
{
	char parent[256];
	char *slash;

	snprintf(parent, sizeof(parent), "%s", pin_dir);
	slash = strrchr(parent, '/');
	if (slash && slash != parent)
		*slash = '\0';
	if (is_bpffs(parent))
		return 0;
	if (strcmp(parent, BPFFS) == 0) {
		if (mount("bpf", BPFFS, "bpf", 0, NULL) == 0) {
			pr_info("mounted bpffs at %s", BPFFS);
			return 0;
		}
		pr_err("cannot mount bpffs at %s: %s", BPFFS, strerror(errno));
		return -1;
	}
	pr_err("pin dir %s: %s is not a bpffs mount", pin_dir, parent);
	return -1;
}

int datapath_unpin_dir(const char *pin_dir)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir(pin_dir);
	int err = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", pin_dir, de->d_name);
		if (unlink(path) && errno != ENOENT)
			err = -errno;
	}
	closedir(d);
	if (rmdir(pin_dir) && errno != ENOENT)
		err = -errno;
	return err;
}

void datapath_run_path(const char *pin_dir, const char *dir, const char *suffix,
		       char *buf, size_t len)
{
	char name[256];
	size_t i;

	snprintf(name, sizeof(name), "%s", pin_dir);
	for (i = 0; name[i]; i++)
		if (name[i] == '/')
			name[i] = '_';
	snprintf(buf, len, "%s/pathsplice%s%s", dir, name, suffix);
}

/* One pathsplice per pin dir: a lock file next to nothing else in /run. */
static int take_lock(struct datapath *dp)
{
	char path[PATH_MAX];

	mkdir("/run/lock", 0755);
	datapath_run_path(dp->pin_dir, "/run/lock", ".lock", path, sizeof(path));
	dp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (dp->lock_fd < 0) {
		pr_err("cannot open lock file %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(dp->lock_fd, LOCK_EX | LOCK_NB)) {
		pr_err("another pathsplice is running with pin dir %s (lock %s)", dp->pin_dir, path);
		return -1;
	}
	return 0;
}

static void *map_mmap(struct bpf_map *map, size_t *len)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t stride = (bpf_map__value_size(map) + 7) & ~7UL;
	void *p;

	*len = (stride * bpf_map__max_entries(map) + page - 1) & ~(page - 1);
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(map), 0);
	if (p == MAP_FAILED) {
		pr_err("cannot mmap map %s: %s", bpf_map__name(map), strerror(errno));
		return NULL;
	}
	return p;
}

static int pin(struct datapath *dp, int fd, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dp->pin_dir, name);
	if (bpf_obj_pin(fd, path)) {
		pr_err("cannot pin %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int pin_all(struct datapath *dp)
{
	struct bpf_map *map;

	if (mkdir(dp->pin_dir, 0700) && errno != EEXIST) {
		pr_err("cannot create pin dir %s: %s", dp->pin_dir, strerror(errno));
		return -1;
	}
	dp->pinned = true;
	bpf_object__for_each_map(map, dp->skel->obj) {
		/* libbpf's internal maps (.rodata, .bss) are implementation details */
		if (strchr(bpf_map__name(map), '.'))
			continue;
		if (pin(dp, bpf_map__fd(map), bpf_map__name(map)))
			return -1;
	}
	return pin(dp, bpf_program__fd(dp->skel->progs.ps_verdict), "ps_verdict");
}

/* The cgroup v2 hierarchy's mount point, from /proc/mounts. */
static int cgroup2_root(char *buf, size_t len)
{
	char dev[64], dir[PATH_MAX], type[32];
	FILE *f = fopen("/proc/mounts", "re");
	int found = -1;

	if (!f)
		return -1;
	while (fscanf(f, "%63s %4095s %31s %*[^\n]", dev, dir, type) == 3) {
		if (strcmp(type, "cgroup2") == 0) {
			snprintf(buf, len, "%s", dir);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

/*
 * Direct responses need the backends' own sockets, which belong to the
 * backends' cgroups: sockops goes on the hierarchy's root. It is a bpf_link
 * held by this process only (never pinned), so the kernel detaches it when
 * the daemon exits, however it exits. Without it the data path still works,
 * every response crossing the proxy's socket.
 */
static void attach_direct(struct datapath *dp)
{
	struct splice_bpf *skel = dp->skel;
	char root[PATH_MAX];
	int cg;

	if (cgroup2_root(root, sizeof(root))) {
		pr_warn("no cgroup v2 hierarchy mounted: direct responses are off");
		return;
	}
	/* the programs come with the maps: attached before sockops inserts */
	if (bpf_prog_attach(bpf_program__fd(skel->progs.ps_response),
			    bpf_map__fd(skel->maps.backends), BPF_SK_MSG_VERDICT, 0) ||
	    bpf_prog_attach(bpf_program__fd(skel->progs.ps_rx),
			    bpf_map__fd(skel->maps.backends), BPF_SK_SKB_STREAM_VERDICT, 0) ||
	    bpf_prog_attach(bpf_program__fd(skel->progs.ps_request),
			    bpf_map__fd(skel->maps.callers), BPF_SK_MSG_VERDICT, 0)) {
		pr_warn("cannot attach the sk_msg programs: %s; direct responses are off",
			strerror(errno));
		return;
	}
	cg = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg >= 0)
		dp->sockops_link = bpf_program__attach_cgroup(skel->progs.ps_sockops, cg);
	if (cg < 0 || !dp->sockops_link) {
		pr_warn("cannot attach sockops to %s: %s; direct responses are off", root,
			strerror(errno));
		dp->sockops_link = NULL;
	} else {
		dp->direct = true;
		pr_debug("direct responses: sockops on %s", root);
	}
	if (cg >= 0)
		close(cg);
}

static void explain_load_error(int err)
{
	if (err == -EPERM || err == -EACCES)
		pr_err("cannot load the BPF data path: permission denied. pathsplice needs root, or "
		       "CAP_BPF + CAP_NET_ADMIN (+ CAP_SYS_ADMIN on kernels that require it); "
		       "run with -v to see the kernel's answer");
	else
		pr_err("cannot load the BPF data path: %s (run with -v to see the verifier log)",
		       strerror(-err));
}

/* The hand-back ring: room for a record (8-byte header + index) per socket
 * slot, in whole pages, a power of two. Fuller is still correct (lost
 * records are counted and the daemon then looks at every socket), only
 * slower. */
static uint32_t handbacks_size(uint32_t max_conns)
{
	uint64_t want = (uint64_t)max_conns * 16;
	uint32_t n = (uint32_t)sysconf(_SC_PAGESIZE);
	const char *test = getenv("PATHSPLICE_TEST_HANDBACK_RING");

	/* the tests shrink it to make it overflow (tests/integration/routing.sh) */
	if (test)
		want = strtoull(test, NULL, 10);
	while (n < want && n < (1U << 30))
		n <<= 1;
	if (test)
		pr_warn("PATHSPLICE_TEST_HANDBACK_RING: the hand-back ring has %u bytes", n);
	return n;
}

static int on_handback(void *ctx, void *data, size_t len)
{
	struct datapath *dp = ctx;
	uint32_t slot;

	if (len < sizeof(slot) || !dp->hb_cb)
		return 0;
	memcpy(&slot, data, sizeof(slot));
	if (slot < dp->max_conns)
		dp->hb_cb(dp->hb_arg, slot);
	return 0;
}

int datapath_handbacks_fd(const struct datapath *dp)
{
	return bpf_map__fd(dp->skel->maps.handbacks);
}

int datapath_handbacks(struct datapath *dp, void (*cb)(void *arg, uint32_t slot), void *arg)
{
	int n;

	dp->hb_cb = cb;
	dp->hb_arg = arg;
	n = ring_buffer__consume(dp->handbacks);
	dp->hb_cb = NULL;
	return n;
}

uint64_t datapath_handbacks_lost(const struct datapath *dp)
{
	return __atomic_load_n(&dp->skel->bss->handbacks_lost, __ATOMIC_ACQUIRE);
}

int datapath_open(struct datapath *dp, const struct datapath_opts *opts)
{
	struct splice_bpf *skel;
	int err;
	uint32_t i;

	memset(dp, 0, sizeof(*dp));
	dp->lock_fd = -1;
	snprintf(dp->pin_dir, sizeof(dp->pin_dir), "%s", opts->pin_dir);
	dp->max_conns = opts->max_conns;

	if (ensure_bpffs(dp->pin_dir))
		return -1;

	skel = splice_bpf__open();
	if (!skel) {
		pr_err("cannot open the BPF object: %s", strerror(errno));
		return -1;
	}
	dp->skel = skel;
	bpf_map__set_max_entries(skel->maps.sockets, opts->max_conns);
	bpf_map__set_max_entries(skel->maps.conn_index, opts->max_conns);
	bpf_map__set_max_entries(skel->maps.conns, opts->max_conns);
	bpf_map__set_max_entries(skel->maps.inst_rxs, opts->max_conns);
	bpf_map__set_max_entries(skel->maps.handbacks, handbacks_size(opts->max_conns));
	skel->rodata->fc_limit = opts->fc_limit;
	skel->rodata->take_callers = opts->callers;

	err = splice_bpf__load(skel);
	if (err) {
		explain_load_error(err);
		return -1;
	}
	dp->sockets_fd = bpf_map__fd(skel->maps.sockets);
	dp->conn_index_fd = bpf_map__fd(skel->maps.conn_index);
	dp->services_fd = bpf_map__fd(skel->maps.services);
	dp->inst_stats_fd = bpf_map__fd(skel->maps.inst_stats);
	dp->instances_fd = bpf_map__fd(skel->maps.instances);
	dp->prog_fd = bpf_program__fd(skel->progs.ps_verdict);

	/* The verdict belongs to the sockhash: only sockets pathsplice puts
	 * there are ever seen by it. */
	if (bpf_prog_attach(bpf_program__fd(skel->progs.ps_verdict), dp->sockets_fd,
			    BPF_SK_SKB_STREAM_VERDICT, 0)) {
		pr_err("cannot attach the stream verdict to the sockhash: %s", strerror(errno));
		return -1;
	}
	if (opts->direct)
		attach_direct(dp);
	dp->conns = map_mmap(skel->maps.conns, &dp->conns_len);
	dp->instances = map_mmap(skel->maps.instances, &dp->instances_len);
	dp->rr = map_mmap(skel->maps.rr, &dp->rr_len);
	if (!dp->conns || !dp->instances || !dp->rr)
		return -1;

	dp->handbacks = ring_buffer__new(bpf_map__fd(skel->maps.handbacks), on_handback, dp, NULL);
	if (!dp->handbacks) {
		pr_err("cannot read the hand-back ring: %s", strerror(errno));
		return -1;
	}

	dp->free_slots = calloc(dp->max_conns, sizeof(*dp->free_slots));
	if (!dp->free_slots)
		return -1;
	for (i = 0; i < dp->max_conns; i++)
		dp->free_slots[i] = dp->max_conns - 1 - i;
	dp->n_free = dp->max_conns;

	/* Loaded (the slow part): now take over from a running daemon if there
	 * is one, then own the pin dir. */
	if (opts->before_pin && opts->before_pin(opts->arg))
		return -1;
	if (take_lock(dp))
		return -1;
	if (access(dp->pin_dir, F_OK) == 0) {
		pr_warn("removing stale pins in %s left by an earlier run", dp->pin_dir);
		if ((err = datapath_unpin_dir(dp->pin_dir))) {
			pr_err("cannot remove stale pins in %s: %s", dp->pin_dir, strerror(-err));
			return -1;
		}
	}
	if (pin_all(dp))
		return -1;
	pr_debug("data path loaded and pinned at %s (%u socket slots)", dp->pin_dir, dp->max_conns);
	return 0;
}

int datapath_handover(struct datapath *dp)
{
	char old[sizeof(dp->pin_dir)];
	int n;

	n = snprintf(old, sizeof(old), "%s-old-%d", dp->pin_dir, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(old)) {
		pr_err("pin dir %s: name too long to hand over", dp->pin_dir);
		return -1;
	}
	if (dp->pinned && rename(dp->pin_dir, old)) {
		pr_err("cannot move pins %s to %s: %s", dp->pin_dir, old, strerror(errno));
		return -1;
	}
	pr_info("pins moved to %s for the new daemon", old);
	/* new clients and callers are the new daemon's: its sockops must
	 * find them free */
	if (dp->listening)
		bpf_map_delete_elem(bpf_map__fd(dp->skel->maps.listeners), &dp->listen_key);
	dp->listening = false;
	snprintf(dp->pin_dir, sizeof(dp->pin_dir), "%s", old);
	if (dp->lock_fd >= 0)
		close(dp->lock_fd);
	dp->lock_fd = -1;
	return 0;
}

void datapath_close(struct datapath *dp)
{
	int err;

	if (dp->conns)
		munmap(dp->conns, dp->conns_len);
	if (dp->instances)
		munmap(dp->instances, dp->instances_len);
	if (dp->rr)
		munmap(dp->rr, dp->rr_len);
	dp->conns = NULL;
	dp->instances = NULL;
	dp->rr = NULL;
	ring_buffer__free(dp->handbacks);
	dp->handbacks = NULL;
	if (dp->skel) {
		bpf_link__destroy(dp->sockops_link);
		dp->sockops_link = NULL;
		dp->direct = false;
		bpf_prog_detach2(bpf_program__fd(dp->skel->progs.ps_response),
				 bpf_map__fd(dp->skel->maps.backends), BPF_SK_MSG_VERDICT);
		bpf_prog_detach2(bpf_program__fd(dp->skel->progs.ps_request),
				 bpf_map__fd(dp->skel->maps.callers), BPF_SK_MSG_VERDICT);
		bpf_prog_detach2(bpf_program__fd(dp->skel->progs.ps_rx),
				 bpf_map__fd(dp->skel->maps.backends), BPF_SK_SKB_STREAM_VERDICT);
		bpf_prog_detach2(bpf_program__fd(dp->skel->progs.ps_verdict), dp->sockets_fd,
				 BPF_SK_SKB_STREAM_VERDICT);
		splice_bpf__destroy(dp->skel);
		dp->skel = NULL;
	}
	if (dp->pinned) {
		if ((err = datapath_unpin_dir(dp->pin_dir)))
			pr_warn("cannot remove pins in %s: %s", dp->pin_dir, strerror(-err));
		dp->pinned = false;
	}
	free(dp->free_slots);
	dp->free_slots = NULL;
	if (dp->lock_fd >= 0)
		close(dp->lock_fd);
	dp->lock_fd = -1;
}

int datapath_slot_alloc(struct datapath *dp)
{
	uint32_t slot;

	if (!dp->n_free)
		return -1;
	slot = dp->free_slots[--dp->n_free];
	memset(&dp->conns[slot], 0, sizeof(dp->conns[slot]));
	return slot;
}

void datapath_slot_free(struct datapath *dp, int slot)
{
	dp->free_slots[dp->n_free++] = slot;
}

/* sockops knows the connections to this address in this network namespace
 * as the proxy's: a same-host caller's (with --direct-callers) is matched
 * at both ends, and the others' ACKs refresh client_ready()'s look. */
void datapath_listener(struct datapath *dp, int fd, bool callers)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin), nlen = sizeof(__u64);
	__u64 netns;

	if (!dp->direct)
		return;
	if (getsockname(fd, (struct sockaddr *)&sin, &len) ||
	    getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &netns, &nlen))
		goto fail;
	dp->listen_key = (struct ps_listen){ .ip = sin.sin_addr.s_addr, .port = ntohs(sin.sin_port) };
	if (bpf_map_update_elem(bpf_map__fd(dp->skel->maps.listeners), &dp->listen_key, &netns,
				BPF_ANY))
		goto fail;
	dp->listening = true;
	if (callers)
		pr_debug("same-host callers of %s:%u go straight to the instances",
			 inet_ntoa(sin.sin_addr), dp->listen_key.port);
	return;
fail:
	pr_warn("clients' sockets not watched (same-host callers stay on TCP): %s",
		strerror(errno));
}

int datapath_index(struct datapath *dp, int slot, int fd, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	__u32 key = slot;

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len))
		return -errno;
	if (bpf_map_update_elem(dp->conn_index_fd, cookie, &key, BPF_ANY)) {
		*cookie = 0;
		return -errno;
	}
	return 0;
}

int datapath_insert(struct datapath *dp, int slot, int fd, uint64_t *cookie)
{
	__u32 key = slot;
	__u64 sockfd = fd;
	int err;

	if (!*cookie && (err = datapath_index(dp, slot, fd, cookie)))
		return err;
	if (bpf_map_update_elem(dp->sockets_fd, &key, &sockfd, BPF_ANY)) {
		err = -errno;
		bpf_map_delete_elem(dp->conn_index_fd, cookie);
		*cookie = 0;
		return err;
	}
	return 0;
}

void datapath_remove(struct datapath *dp, int slot, uint64_t cookie)
{
	__u32 key = slot;

	bpf_map_delete_elem(dp->sockets_fd, &key);
	bpf_map_delete_elem(dp->conn_index_fd, &cookie);
}


void splice_kick(int fd)
{
	char b;

	/* tcp_bpf's recvmsg runs the verdict over a non-empty receive queue;
	 * MSG_PEEK leaves whatever it passes for a real read. */
	(void)!recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
}

/* Wait for the verdict runs in progress on the socket to end. */
static void verdicts_idle(const struct ps_conn *c)
{
	while (__atomic_load_n(&c->busy, __ATOMIC_SEQ_CST))
		__builtin_ia32_pause();
}

bool splice_arm(struct ps_conn *c, uint64_t consumed)
{
	__u64 arm = consumed + 1;

	__atomic_store_n(&c->arm, arm, __ATOMIC_SEQ_CST);
	/* a verdict run that read the arm before it was set may still pass a
	 * segment: once none is running, every one that passed has counted it
	 * (runs count themselves busy before they look at the arm) */
	verdicts_idle(c);
	if (__atomic_load_n(&c->passed, __ATOMIC_SEQ_CST) == consumed)
		return true;
	/* the arm can never match now: no verdict takes it, and as long as it
	 * is set userspace would not read what was passed */
	return !__atomic_compare_exchange_n(&c->arm, &arm, 0, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST);
}

void splice_take(struct ps_conn *c)
{
	for (;;) {
		__atomic_exchange_n(&c->arm, 0, __ATOMIC_SEQ_CST);
		__atomic_store_n(&c->mode, PS_MODE_USER, __ATOMIC_SEQ_CST);
		/* pairs with the verdict's busy increment before it reads mode */
		verdicts_idle(c);
		/* a run that consumed the arm just before may have set KERNEL */
		if (__atomic_load_n(&c->mode, __ATOMIC_SEQ_CST) == PS_MODE_USER)
			return;
	}
}

bool splice_kernel_owned(const struct ps_conn *c)
{
	return __atomic_load_n(&c->mode, __ATOMIC_ACQUIRE) == PS_MODE_KERNEL ||
	       __atomic_load_n(&c->arm, __ATOMIC_ACQUIRE) != 0;
}

static int tcp_info_of(int fd, struct tcp_info *ti)
{
	socklen_t len = sizeof(*ti);

	memset(ti, 0, sizeof(*ti));
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) ? -errno : 0;
}

int sock_accepted(int fd, bool opened, uint64_t *bytes, int *state)
{
	struct tcp_info ti;
	int outq, err;

	/* acked first, queue second: an ACK in between can only make the sum
	 * smaller, never claim bytes the socket has not taken */
	if ((err = tcp_info_of(fd, &ti)))
		return err;
	if (ioctl(fd, SIOCOUTQ, &outq))
		return -errno;
	*bytes = ti.tcpi_bytes_acked + (uint64_t)outq - opened;
	*state = ti.tcpi_state;
	return 0;
}

int sock_received(int fd, uint64_t *bytes, int *state)
{
	struct tcp_info ti;
	int err;

	if ((err = tcp_info_of(fd, &ti)))
		return err;
	*bytes = ti.tcpi_bytes_received;
	*state = ti.tcpi_state;
	return 0;
}

int sock_state(int fd)
{
	struct tcp_info ti;

	return tcp_info_of(fd, &ti) ? -1 : ti.tcpi_state;
}
