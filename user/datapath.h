/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel side as userspace sees it: loading, pinning and unpinning the
 * BPF object, the shared maps, and the operations of the ownership protocol
 * on a spliced socket (struct ps_conn in pathsplice.h).
 */
#ifndef PS_DATAPATH_H
#define PS_DATAPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/types.h>

#include "pathsplice.h"

struct datapath_opts {
	const char *pin_dir;		/* e.g. /sys/fs/bpf/pathsplice */
	uint32_t max_conns;		/* spliced sockets */
	uint64_t fc_limit;		/* bytes queued for a peer before hand-back */
	bool direct;			/* direct responses from same-host backends */
	bool callers;			/* ... and same-host callers straight to them */
	/* called once the object is loaded, before the pin dir is locked and
	 * pinned (an upgrade takes over from the running daemon there) */
	int (*before_pin)(void *arg);
	void *arg;
};

struct ring_buffer;

struct datapath {
	struct splice_bpf *skel;
	int sockets_fd;
	int conn_index_fd;
	int services_fd;
	int inst_stats_fd;
	int instances_fd;
	int prog_fd;			/* the stream verdict */
	struct bpf_link *sockops_link;	/* direct responses: on the cgroup root */
	bool direct;			/* ... and attached */
	bool listening;			/* listen_key is in `listeners` */
	struct ps_listen listen_key;
	struct ps_conn *conns;		/* mmapped `conns` */
	struct ps_instance *instances;	/* mmapped `instances` */
	__u64 *rr;			/* mmapped `rr` */
	size_t conns_len, instances_len, rr_len;
	uint32_t max_conns;
	struct ring_buffer *handbacks;	/* the verdict's hand-back records */
	void (*hb_cb)(void *arg, uint32_t slot);	/* during datapath_handbacks() */
	void *hb_arg;
	uint32_t *free_slots;		/* stack of unused conns indexes */
	uint32_t n_free;
	char pin_dir[256];
	int lock_fd;
	bool pinned;
};

/* Load, attach and pin; cleans up what a crashed earlier run left behind. */
int datapath_open(struct datapath *dp, const struct datapath_opts *opts);
/* Detach, unpin and free everything. Safe on a partly opened datapath. */
void datapath_close(struct datapath *dp);

/* Give the pin dir to a new daemon: move the pins aside (to
 * "<pin-dir>-old-<pid>"; bpffs refuses "." in names, unpinned at exit as usual) and drop the lock. */
int datapath_handover(struct datapath *dp);

/* "<dir>/pathsplice<pin dir with / as _><suffix>": per-pin-dir files in /run. */
void datapath_run_path(const char *pin_dir, const char *dir, const char *suffix,
		       char *buf, size_t len);

/* Remove a pin directory and everything pinned in it (used at start and by tests). */
int datapath_unpin_dir(const char *pin_dir);

/* conns slots */
int datapath_slot_alloc(struct datapath *dp);	/* -1 when full */
void datapath_slot_free(struct datapath *dp, int slot);

static inline struct ps_conn *datapath_conn(struct datapath *dp, int slot)
{
	return &dp->conns[slot];
}

/* Index a socket's cookie under `slot` (before it connects, so that sockops
 * can find the backend's end of a direct-response connection). */
int datapath_index(struct datapath *dp, int slot, int fd, uint64_t *cookie);

/* Tell sockops the proxy's listening socket (direct path only): its
 * clients' ACKs refresh what the sk_msg program knows of their sockets, and
 * with `callers` same-host callers go straight to the instances. */
void datapath_listener(struct datapath *dp, int fd, bool callers);

/* Put a socket in the sockhash under `slot` (indexing it first unless
 * *cookie is already set). Fails with -EOPNOTSUPP for a socket that is no
 * longer ESTABLISHED (e.g. the client half-closed). */
int datapath_insert(struct datapath *dp, int slot, int fd, uint64_t *cookie);
/* Take a socket out of the sockhash and conn_index (either may be absent). */
void datapath_remove(struct datapath *dp, int slot, uint64_t cookie);

/* Make the verdict look at bytes queued before the socket entered the map. */
void splice_kick(int fd);

/* Hand a USER-mode socket to the kernel once it has read `consumed` bytes,
 * all it was passed. False if the verdict passed more meanwhile: the arm is
 * withdrawn, and those bytes are userspace's to read. */
bool splice_arm(struct ps_conn *c, uint64_t consumed);

/* Take a socket back from the kernel now; returns once no verdict run that
 * saw the old mode is still in progress. */
void splice_take(struct ps_conn *c);

/* Hand-backs: the verdict records the conns index of each socket it gives
 * back to userspace in a ring (the daemon does not watch the sockets the
 * kernel owns for readability). The fd is readable while records wait;
 * datapath_handbacks() calls cb for each and returns how many, or < 0. A
 * record the ring had no room for is counted in datapath_handbacks_lost(). */
int datapath_handbacks_fd(const struct datapath *dp);
int datapath_handbacks(struct datapath *dp, void (*cb)(void *arg, uint32_t slot), void *arg);
uint64_t datapath_handbacks_lost(const struct datapath *dp);

/* Is the socket currently owned by the kernel (mode KERNEL, or armed and
 * about to be)? */
bool splice_kernel_owned(const struct ps_conn *c);

/* Every byte ever put into a TCP socket (acked + queued), and the socket's
 * TCP state (TCP_ESTABLISHED, ...) from the same look. `opened`: the socket
 * made the connection, and TCP counts its SYN as one acked byte. */
int sock_accepted(int fd, bool opened, uint64_t *bytes, int *state);
int sock_received(int fd, uint64_t *bytes, int *state);
/* The TCP state alone, or -1. */
int sock_state(int fd);

#endif
