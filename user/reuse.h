/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One-shot requests on kept instance connections.
 *
 * A client that says `Connection: close` gets one exchange, which is relayed
 * in userspace (a splice costs more than it saves). Opening and closing a TCP
 * connection to the instance for each such request costs the daemon more
 * than the relay itself, so an HTTP/1.1 one-shot GET or HEAD goes over
 * an idle connection kept from an earlier one: its `close` token is blanked
 * out so that the instance keeps the connection open, the response tells the
 * client `Connection: close`, and once the response is complete the instance
 * connection goes back to the pool.
 */
#ifndef PS_REUSE_H
#define PS_REUSE_H

#include <stddef.h>
#include <stdint.h>

/* In a request head: blank out (with spaces, in place) every `close` token
 * of its Connection fields. Returns the number of tokens blanked. */
int reuse_request_head(uint8_t *head, size_t len);

/* In a response head: turn every `keep-alive` token of its Connection
 * fields into `close` (padded with spaces, in place). Returns 1 if the head
 * now says close, 0 if a `Connection: close` field must be added. */
int reuse_response_head(uint8_t *head, size_t len);

/* Where a field added to a head of `len` bytes goes: before the empty line
 * that ends it. */
size_t reuse_head_end(const uint8_t *head, size_t len);

/* Idle instance connections, per instance slot. */
struct pool;

struct pool *pool_new(uint32_t max_per_inst, uint32_t idle_ms);
/* An idle connection to instance `inst` (of generation `gen`) that is still
 * open and silent, or -1. Stale ones met on the way are closed. */
int pool_get(struct pool *p, uint32_t inst, uint32_t gen, uint64_t now_ms);
/* Keep fd for the instance; closes it when the instance's pool is full. */
void pool_put(struct pool *p, uint32_t inst, uint32_t gen, int fd, uint64_t now_ms);
/* Close the connections idle for longer than idle_ms. */
void pool_sweep(struct pool *p, uint64_t now_ms);
/* Connections kept now. */
uint32_t pool_size(const struct pool *p);
/* Close every kept connection and free the pool. */
void pool_free(struct pool *p);

#endif
