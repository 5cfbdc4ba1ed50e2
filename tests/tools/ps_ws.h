/* SPDX-License-Identifier: GPL-2.0 */
/*
 * WebSocket (RFC 6455) pieces for the pathsplice test tools: SHA-1 and
 * base64 for the Sec-WebSocket-Accept handshake, and frame headers.
 *
 * Written here rather than linked because the tools may only use libc,
 * pthreads and zlib. tests/tools/selftest.h checks them against the
 * published test vectors (`ps-client selftest`, `ps-backend --self-test`).
 */
#ifndef PS_TOOLS_WS_H
#define PS_TOOLS_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* SHA-1 (FIPS 180-4)                                                        */

struct ps_sha1 {
	uint32_t h[5];
	uint64_t bytes;		/* message length so far */
	uint8_t block[64];
	size_t used;		/* bytes in block */
};

static inline uint32_t ps_rol32(uint32_t x, int n)
{
	return (x << n) | (x >> (32 - n));
}

static inline void ps_sha1_init(struct ps_sha1 *s)
{
	static const uint32_t iv[5] = {
		0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0,
	};

	memset(s, 0, sizeof(*s));
	memcpy(s->h, iv, sizeof(iv));
}

/* One 64-byte block into the state. */
static inline void ps_sha1_block(struct ps_sha1 *s, const uint8_t *p)
{
	uint32_t w[80], a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];

	for (int t = 0; t < 16; t++)
		w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
		       (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
	for (int t = 16; t < 80; t++)
		w[t] = ps_rol32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
	for (int t = 0; t < 80; t++) {
		uint32_t f, k;

		if (t < 20) {
			f = (b & c) | (~b & d);
			k = 0x5a827999;
		} else if (t < 40) {
			f = b ^ c ^ d;
			k = 0x6ed9eba1;
		} else if (t < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8f1bbcdc;
		} else {
			f = b ^ c ^ d;
			k = 0xca62c1d6;
		}
		uint32_t tmp = ps_rol32(a, 5) + f + e + k + w[t];

		e = d;
		d = c;
		c = ps_rol32(b, 30);
		b = a;
		a = tmp;
	}
	s->h[0] += a;
	s->h[1] += b;
	s->h[2] += c;
	s->h[3] += d;
	s->h[4] += e;
}

static inline void ps_sha1_update(struct ps_sha1 *s, const void *data, size_t n)
{
	const uint8_t *p = data;

	s->bytes += n;
	while (n > 0) {
		size_t take = 64 - s->used < n ? 64 - s->used : n;

		memcpy(s->block + s->used, p, take);
		s->used += take;
		p += take;
		n -= take;
		if (s->used == 64) {
			ps_sha1_block(s, s->block);
			s->used = 0;
		}
	}
}

/* Pads (0x80, zeros, 64-bit big-endian bit length) and writes the digest. */
static inline void ps_sha1_final(struct ps_sha1 *s, uint8_t out[20])
{
	uint64_t bits = s->bytes * 8;
	uint8_t pad[72] = { 0x80 };
	size_t padlen = (s->used < 56 ? 56 : 120) - s->used;

	for (int i = 0; i < 8; i++)
		pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
	ps_sha1_update(s, pad, padlen + 8);
	for (int i = 0; i < 20; i++)
		out[i] = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

/* ------------------------------------------------------------------------ */
/* base64 (RFC 4648, with padding)                                           */

/* Writes 4 * ceil(n / 3) characters and a NUL to out. */
static inline void ps_base64_encode(const uint8_t *in, size_t n, char *out)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		*out++ = alphabet[(v >> 18) & 63];
		*out++ = alphabet[(v >> 12) & 63];
		*out++ = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
		*out++ = i + 2 < n ? alphabet[v & 63] : '=';
	}
	*out = '\0';
}

/* ------------------------------------------------------------------------ */
/* Handshake and frames                                                      */

#define PS_WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define PS_WS_ACCEPT_LEN	28	/* base64 of a 20-byte digest */
#define PS_WS_KEY_LEN		24	/* base64 of the 16-byte nonce */
#define PS_WS_HDR_MAX		14	/* 2 + 8 (length) + 4 (mask) */
#define PS_WS_CONTROL_MAX	125

enum ps_ws_opcode {
	PS_WS_CONT = 0x0,
	PS_WS_TEXT = 0x1,
	PS_WS_BINARY = 0x2,
	PS_WS_CLOSE = 0x8,
	PS_WS_PING = 0x9,
	PS_WS_PONG = 0xa,
};

/* Sec-WebSocket-Accept = base64(SHA-1(key + GUID)); out gets 28 chars + NUL. */
static inline void ps_ws_accept(const char *key, size_t key_len, char out[PS_WS_ACCEPT_LEN + 1])
{
	struct ps_sha1 s;
	uint8_t digest[20];

	ps_sha1_init(&s);
	ps_sha1_update(&s, key, key_len);
	ps_sha1_update(&s, PS_WS_GUID, strlen(PS_WS_GUID));
	ps_sha1_final(&s, digest);
	ps_base64_encode(digest, sizeof(digest), out);
}

static inline bool ps_ws_is_control(int opcode)
{
	return opcode >= PS_WS_CLOSE;
}

struct ps_ws_frame {
	bool fin;
	int opcode;
	bool masked;
	uint8_t mask[4];
	uint64_t len;		/* payload length */
	size_t hdr_len;		/* bytes of header, mask key included */
};

/*
 * Writes a frame header to out (PS_WS_HDR_MAX bytes of room). A non-NULL
 * mask makes it a masked (client) frame. Returns the header length.
 */
static inline size_t ps_ws_frame_header(uint8_t *out, bool fin, int opcode, uint64_t len,
					const uint8_t *mask)
{
	size_t n = 2;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	out[1] = mask ? 0x80 : 0;
	if (len < 126) {
		out[1] |= (uint8_t)len;
	} else if (len <= 0xffff) {
		out[1] |= 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		n = 4;
	} else {
		out[1] |= 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		n = 10;
	}
	if (mask) {
		memcpy(out + n, mask, 4);
		n += 4;
	}
	return n;
}

/*
 * Parses the frame header at the start of p[0, avail). Returns 1 with *f
 * filled, 0 if more bytes are needed, or a reason the frame is invalid
 * (reserved bits or opcodes, an oversized or fragmented control frame).
 */
static inline int ps_ws_parse_header(const uint8_t *p, size_t avail, struct ps_ws_frame *f,
				     const char **err)
{
	if (avail < 2)
		return 0;
	memset(f, 0, sizeof(*f));
	f->fin = p[0] & 0x80;
	f->opcode = p[0] & 0x0f;
	f->masked = p[1] & 0x80;
	f->len = p[1] & 0x7f;
	f->hdr_len = 2 + (f->len == 126 ? 2 : f->len == 127 ? 8 : 0) + (f->masked ? 4 : 0);
	if (avail < f->hdr_len)
		return 0;
	if (f->len == 126) {
		f->len = (uint64_t)p[2] << 8 | p[3];
	} else if (f->len == 127) {
		f->len = 0;
		for (int i = 0; i < 8; i++)
			f->len = f->len << 8 | p[2 + i];
	}
	if (f->masked)
		memcpy(f->mask, p + f->hdr_len - 4, 4);

	*err = NULL;
	if (p[0] & 0x70)
		*err = "reserved bits set";
	else if ((f->opcode > PS_WS_BINARY && f->opcode < PS_WS_CLOSE) || f->opcode > PS_WS_PONG)
		*err = "reserved opcode";
	else if (f->len >> 63)
		*err = "payload length with the top bit set";
	else if (ps_ws_is_control(f->opcode) && (!f->fin || f->len > PS_WS_CONTROL_MAX))
		*err = "fragmented or oversized control frame";
	return *err ? -1 : 1;
}

/* XORs n payload bytes that start at payload offset `offset` with the key. */
static inline void ps_ws_mask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset)
{
	for (size_t i = 0; i < n; i++)
		data[i] ^= mask[(offset + i) & 3];
}

#endif /* PS_TOOLS_WS_H */
