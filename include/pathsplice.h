/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The vocabulary shared by the kernel data path (bpf/) and userspace (user/):
 * map keys and values, limits, and the ownership protocol of a spliced socket.
 *
 * Every map value here is typed through BTF, so
 *   bpftool map dump pinned /sys/fs/bpf/pathsplice/<map>
 * shows field names.
 */
#ifndef PATHSPLICE_H
#define PATHSPLICE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#include "http_frame.h"

/* Limits. Service paths longer than PS_PATH_MAX - 1 bytes are rejected by the
 * registry parser, so the kernel only has to buffer that much of a request
 * target to decide its longest-prefix match exactly. */
#define PS_PATH_MAX		128
#define PS_NAME_MAX		64	/* service name, instance id, host name */
#define PS_MAX_SERVICES		1024
#define PS_MAX_INSTANCES	4096
#define PS_SVC_MAX_INST		64	/* instances of one service */
#define PS_DEFAULT_MAX_CONNS	16384	/* spliced sockets (two per connection) */

/* A service: value of the `services` hash map, keyed by ps_path_hash(path).
 * The whole record, instance list included, is replaced with one map update,
 * so a reader never sees a half-written instance list. */
struct ps_service {
	__u32 id;			/* index into rr / svc_stats */
	__u16 path_len;
	__u16 n_inst;
	__u32 inst[PS_SVC_MAX_INST];	/* instance slots, in registry order */
	char path[PS_PATH_MAX];		/* verified byte for byte: no hash collision misroutes */
	char name[PS_NAME_MAX];
};

enum ps_inst_state {
	PS_INST_FREE = 0,		/* slot unused */
	PS_INST_UP = 1,
	PS_INST_DOWN = 2,		/* failed its checks, or a connect from the data path */
	PS_INST_DRAINING = 3,		/* removed from the registry, existing connections finish */
};

/* Why an instance last changed state (or its last check result). */
enum ps_check_reason {
	PS_CHK_NONE = 0,		/* not checked yet */
	PS_CHK_OK,			/* check passed */
	PS_CHK_REFUSED,			/* connection refused */
	PS_CHK_TIMEOUT,			/* no connection or no answer in time */
	PS_CHK_HTTP_STATUS,		/* answered a status other than 2xx/3xx (see status) */
	PS_CHK_BAD_ANSWER,		/* closed, or answered something that is not HTTP */
	PS_CHK_ERROR,			/* another socket error (see check_errno) */
	PS_CHK_PASSIVE_REFUSED,		/* the data path's connect was refused */
	PS_CHK_PASSIVE_TIMEOUT,		/* the data path's connect timed out */
	PS_CHK_MAX,
};

/* An instance: value of the mmapable `instances` array, indexed by slot.
 * Written by the controller's thread only; the verdict reads `state`. */
struct ps_instance {
	__u32 addr;			/* IPv4, network order */
	__u16 port;			/* network order */
	__u8 state;			/* enum ps_inst_state */
	__u8 reason;			/* enum ps_check_reason of the last state change */
	__u32 service;			/* ps_service.id */
	__u32 gen;			/* bumped whenever the slot is reused */
	__u16 status;			/* HTTP status of the last failed HTTP check */
	__u16 check_errno;		/* errno of the last PS_CHK_ERROR */
	__u32 transitions;		/* up <-> down changes */
	__u32 passive_downs;		/* times the data path marked it down */
	__u32 checks_failed;		/* active checks that failed */
	char id[PS_NAME_MAX];

	/* counted by the proxy (the kernel counts what it moves in inst_stats) */
	__u64 conns_total;		/* backend connections opened to it */
	__u32 conns_active;		/* of which open now */
	__u32 connect_failures;		/* connects that failed: the request was retried */
	__u64 user_requests;		/* request heads relayed in userspace */
	__u64 user_req_bytes;		/* client -> backend bytes relayed in userspace */
	__u64 user_resp_bytes;		/* backend -> client bytes relayed in userspace */
};

/* Which end of a connection a spliced socket is. */
enum ps_side {
	PS_SIDE_CLIENT = 0,		/* carries requests towards the backend */
	PS_SIDE_BACKEND = 1,		/* carries responses towards the client */
};

/* Who moves the bytes arriving on a spliced socket. */
enum ps_mode {
	PS_MODE_KERNEL = 0,		/* the verdict frames and redirects them to the peer */
	PS_MODE_USER = 1,		/* the verdict passes them to the socket for userspace */
};

/* Why the kernel handed a socket back to userspace. */
enum ps_handback {
	PS_HB_NONE = 0,
	PS_HB_SWITCH,			/* a request for another service (or none) */
	PS_HB_FRAMING,			/* bytes the kernel does not frame: upgrade, CONNECT, errors */
	PS_HB_PARTIAL,			/* a request line or a response head cut by the segment boundary */
	PS_HB_CONGESTED,		/* the peer has more than the flow-control limit queued */
	PS_HB_PEER,			/* the peer is gone or has stopped reading */
	PS_HB_LIMIT,			/* more heads in one segment than one verdict run parses */
	PS_HB_FORCED,			/* userspace took the socket back (ps_conn.busy handshake) */
	PS_HB_ORDER,			/* requests sent straight to the instance are unanswered and
					 * this one must take the TCP connection: it waits for them */
	PS_HB_MAX,
};

/* How far a stream verdict has seen a socket's byte stream: TCP hands it a
 * retransmission that overlaps what it had seen whole (splice.bpf.c,
 * rx_in_order()). Zero until the verdict's first segment. */
struct ps_rx_seq {
	__u32 next;			/* sequence number expected next */
	__u32 known;			/* next is set */
};

/*
 * One spliced socket: value of the mmapable `conns` array. The index is the
 * socket's key in the `sockets` sockhash; `conn_index` maps its cookie to it.
 *
 * Ownership protocol (userspace and the verdict share this memory):
 * - In KERNEL mode the verdict owns fr, msgs, head_bits, fwd and the mode.
 *   It hands the socket back by setting hb_skip/hb_reason, then mode = USER,
 *   and passing the segment (and every later one) to the socket's queue,
 *   counting the bytes in `passed`.
 * - In USER mode userspace owns fr, msgs, head_bits, out_base. To give the
 *   socket to the kernel it writes them, then arm = (bytes it has read) + 1.
 *   The verdict takes over only if arm == passed + 1, i.e. only when no byte
 *   is waiting in the queue that userspace has not read, so the kernel can
 *   never overtake bytes userspace still holds.
 * - Userspace takes a socket back at any time by storing mode = USER and
 *   waiting until `busy` is zero (the verdict increments it around its run).
 *
 * Direct responses (same-host backends): the backend's own socket is found
 * by sockops when the proxy connects, and an sk_msg program runs in the
 * backend's sendmsg. It may move a response straight into the client socket
 * (skipping the backend -> proxy TCP connection, its verdict run and the
 * kernel worker's hop) only when that cannot reorder or overfill anything:
 * the backend side is in KERNEL mode with direct_ok set, every byte the
 * backend sent through the TCP connection has been through the verdict
 * (leg_sent == passed + fwd - direct), every byte forwarded to the client
 * has entered the client socket, and the client socket has room for the
 * message (the last look the verdict, or sockops at an ACK of the client,
 * took at the client socket, less what was written into it since).
 * Otherwise it sends the bytes the ordinary way, through the TCP
 * connection and the verdict, which keeps flow control and hand-backs. The
 * sk_msg program takes part in the busy/mode handshake like the verdict.
 *
 * Same-host callers (processes in the daemon's network namespace connecting
 * to its listener): sockops puts the caller's own socket in the `callers`
 * sockhash, and an sk_msg program runs in the caller's sendmsg. It puts whole
 * body-free requests straight into the instance's socket, skipping TCP and
 * the kernel worker, when every byte the caller sent through TCP has been
 * through the verdict, every request the verdict sent straight has been
 * answered (those are still on a kernel worker's queue) and every byte of the
 * TCP connection to the instance has left its TCP receive queue, read or
 * queued ahead by ps_rx (leg_read, noted by the instance's sk_msg program). Responses then go straight into the caller's
 * socket while the caller has read everything sent to it through TCP and
 * what is queued for it stays within its receive buffer (the caller's
 * program notes both when it sends). Anything else takes TCP as before.
 *
 * Direct requests: the client verdict redirects a segment of whole requests
 * without a body into the instance's socket (BPF_F_INGRESS) when the TCP
 * connection to it is empty (every byte sent that way read by the instance)
 * and the instance's receive buffer has room. Bytes that arrive over TCP join
 * the same queue (ps_rx), but a redirected segment travels on a kernel
 * worker's queue first, so the TCP connection is used again only once every
 * request sent straight has been answered (ingress_upto against the backend
 * side's msgs): until then a segment that must take it is handed back
 * (PS_HB_ORDER) and userspace waits for the answers before relaying it.
 */
struct ps_conn {
	/* set by userspace before the socket enters the sockhash */
	__u32 peer;			/* conns index of the other socket */
	__u32 service;			/* client side: service the connection is routed to */
	__u32 inst;			/* instance slot of the backend */
	__u8 side;			/* enum ps_side */
	__u8 direct_ok;			/* backend side: responses may skip this socket (below) */
	__u8 pad0[2];

	/* handshake */
	__u32 mode;			/* enum ps_mode */
	__u32 busy;			/* verdict runs in progress */
	__u32 hb_reason;		/* enum ps_handback of the last hand-back */
	__u32 hb_skip;			/* first bytes handed back that belong to the old peer */
	__u32 handbacks;		/* hand-backs so far */
	__u64 arm;
	__u64 passed;			/* bytes passed to the socket for userspace */

	/* byte accounting, for ordering and flow control */
	__u64 fwd;			/* bytes the kernel redirected from this socket to the peer */
	__u64 out_base;			/* bytes put into this socket other than the peer's fwd */
	__u64 fc_next;			/* fwd up to which the peer cannot reach the flow limit;
					 * userspace zeroes it when it arms (forces a check) */
	__u64 leg_sent;			/* backend side: bytes the backend sent through its
					 * TCP connection to this socket (the sk_msg counts) */
	__u64 direct;			/* bytes of fwd that never crossed this socket: backend
					 * side, put straight into the peer or the caller by the
					 * backend's sendmsg; client side, put straight into the
					 * instance by the caller's sendmsg (never reset) */
	__u64 cookie;			/* backend side: this socket's cookie, the key of the
					 * instance's end of the connection in `backends` */
	__u64 ingress;			/* bytes of fwd put straight into the far end, never
					 * entering the peer: client side, the instance's socket;
					 * backend side, the caller's socket */
	__u32 ingress_upto;		/* client side: msgs after the last such redirect by the
					 * verdict (the caller's sendmsg does not queue) */
	__u32 pad3;
	__u64 fwd_retired;		/* client side: fwd to earlier backends (userspace) */
	__u64 leg_read;			/* backend side: bytes of the TCP connection the
					 * instance had read when it last sent */
	/* client side, a same-host caller: its socket's cookie, and how it
	 * stood when it last sent (written by its sk_msg program) */
	__u64 caller;
	__u64 caller_read;		/* bytes it had read through TCP */
	__u64 caller_room_end;		/* the peer's ingress up to which it may be pushed */
	/* client side: this socket as the verdict last saw it, for the sk_msg
	 * program, which cannot look at it itself (seqcount-protected) */
	__u32 snap_seq;
	__u32 pad2;
	__u64 snap_written;		/* out_base + the peer's fwd, read first */
	__u64 snap_direct;		/* the peer's direct */
	__u64 snap_accepted;		/* every byte the socket had taken */
	__s64 snap_room;		/* sk_sndbuf - sk_wmem_queued */

	/* HTTP framing of the bytes arriving on this socket */
	__u32 msgs;			/* client: request heads sent on; backend: responses completed */
	__u32 pad1;
	__u64 head_bits;		/* client: bit (i % 64) set if request i is HEAD */
	struct ps_rx_seq rx;		/* the verdict's: what it has seen of the socket */
	struct ps_frame fr;
	__u8 path[PS_PATH_MAX];		/* the request target so far, for exact route checks */
};

/* A listening address of the proxy: key of the `listeners` map. */
struct ps_listen {
	__u32 ip;			/* network order, 0 for any */
	__u16 port;			/* host order */
	__u16 pad;
};

/* Per-instance counters, in a per-CPU array indexed by instance slot. */
struct ps_inst_stats {
	__u64 req_bytes;		/* client -> backend bytes moved by the kernel */
	__u64 resp_bytes;		/* backend -> client bytes moved by the kernel */
	__u64 requests;			/* request heads the kernel routed */
	__u64 responses;		/* responses the kernel framed */
	__u64 handbacks;		/* segments handed back to userspace */
	__u64 direct_bytes;		/* of resp_bytes, sent by the backend straight to the client */
	__u64 direct_req_bytes;		/* of req_bytes, put straight into the instance's socket */
	__u64 caller_req_bytes;		/* of direct_req_bytes, from a same-host caller's sendmsg */
	__u64 caller_resp_bytes;	/* of direct_bytes, straight into a same-host caller's socket */
	__u64 rx_cut_bytes;		/* retransmitted bytes a verdict had seen before: cut off */
	__u64 rx_uncut;			/* segments that could not be cut: dropped, data lost */
};

/* The hash of a service path: 64-bit FNV-1a, computed incrementally by the
 * framer while it reads a request target, and once by the controller. */
#define PS_FNV_OFFSET	0xcbf29ce484222325ULL
#define PS_FNV_PRIME	0x100000001b3ULL

static __always_inline __u64 ps_hash_byte(__u64 h, __u8 c)
{
	return (h ^ c) * PS_FNV_PRIME;
}

#endif /* PATHSPLICE_H */
