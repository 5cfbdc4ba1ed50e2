/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Known-answer tests of the code the test tools share: SHA-1, base64 and
 * the WebSocket handshake (published vectors), frame headers, the body
 * pattern, and the HTTP head parser and body decoder (fed one byte at a
 * time and all at once, so every resume point is exercised).
 *
 * Run by `ps-client selftest` and `ps-backend --self-test`: a tool whose own
 * parsing is wrong would make every test that trusts it meaningless.
 */
#ifndef PS_TOOLS_SELFTEST_H
#define PS_TOOLS_SELFTEST_H

#include <stdio.h>

#include "pattern.h"
#include "ps_http.h"
#include "ps_ws.h"

#define PS_CHECK(failures, cond, ...)                                            \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "selftest: %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                            \
			fputc('\n', stderr);                                     \
			(failures)++;                                            \
		}                                                                \
	} while (0)

static inline void ps_hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", p[i]);
}

static inline int ps_selftest_sha1_base64(void)
{
	static const struct { const char *in; const char *hex; } sha[] = {
		{ "", "da39a3ee5e6b4b0d3255bfef95601890afd80709" },
		{ "abc", "a9993e364706816aba3e25717850c26c9cd0d89d" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "84983e441c3bd26ebaae4aa1f95129e5e54670f1" },
	};
	static const struct { const char *in; const char *out; } b64[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	int failures = 0;
	uint8_t digest[20];
	char hex[41], text[16], accept[PS_WS_ACCEPT_LEN + 1];
	struct ps_sha1 s;

	for (size_t i = 0; i < sizeof(sha) / sizeof(sha[0]); i++) {
		ps_sha1_init(&s);
		ps_sha1_update(&s, sha[i].in, strlen(sha[i].in));
		ps_sha1_final(&s, digest);
		ps_hex(digest, 20, hex);
		PS_CHECK(failures, !strcmp(hex, sha[i].hex), "sha1(\"%s\") = %s", sha[i].in, hex);
	}
	/* A million 'a', fed in odd-sized pieces across block boundaries. */
	ps_sha1_init(&s);
	for (int i = 0; i < 1000000; i += 7)
		ps_sha1_update(&s, "aaaaaaa", i + 7 <= 1000000 ? 7 : (size_t)(1000000 - i));
	ps_sha1_final(&s, digest);
	ps_hex(digest, 20, hex);
	PS_CHECK(failures, !strcmp(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
		 "sha1(a * 10^6) = %s", hex);

	for (size_t i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
		ps_base64_encode((const uint8_t *)b64[i].in, strlen(b64[i].in), text);
		PS_CHECK(failures, !strcmp(text, b64[i].out), "base64(\"%s\") = %s", b64[i].in, text);
	}
	/* The example of RFC 6455 section 1.3. */
	ps_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
	PS_CHECK(failures, !strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "ws accept = %s", accept);
	return failures;
}

static inline int ps_selftest_ws_frames(void)
{
	static const uint64_t lens[] = { 0, 1, 125, 126, 65535, 65536, 1ULL << 32 };
	static const uint8_t key[4] = { 1, 2, 3, 0xfe };
	int failures = 0;

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (int masked = 0; masked < 2; masked++) {
			uint8_t hdr[PS_WS_HDR_MAX];
			struct ps_ws_frame f;
			const char *err = NULL;
			size_t n = ps_ws_frame_header(hdr, true, PS_WS_BINARY, lens[i],
						      masked ? key : NULL);

			PS_CHECK(failures, ps_ws_parse_header(hdr, n - 1, &f, &err) == 0,
				 "short header accepted");
			PS_CHECK(failures, ps_ws_parse_header(hdr, n, &f, &err) == 1 &&
				 f.len == lens[i] && f.hdr_len == n && f.masked == masked &&
				 f.fin && f.opcode == PS_WS_BINARY &&
				 (!masked || !memcmp(f.mask, key, 4)),
				 "frame header round trip, len %llu", (unsigned long long)lens[i]);
		}
	}
	uint8_t bad[4] = { 0x89, 126, 0, 200 }; /* ping with a 16-bit length */
	struct ps_ws_frame f;
	const char *err = NULL;

	PS_CHECK(failures, ps_ws_parse_header(bad, 4, &f, &err) < 0, "oversized ping accepted");
	bad[0] = 0xc1; /* RSV1 */
	bad[1] = 0;
	PS_CHECK(failures, ps_ws_parse_header(bad, 2, &f, &err) < 0, "RSV1 accepted");
	return failures;
}

static inline int ps_selftest_pattern(void)
{
	uint8_t buf[4096 + 16];
	int failures = 0;

	for (uint64_t off = 0; off < 20; off++) {
		for (size_t n = 0; n < 40; n++) {
			ps_pattern_fill(buf, off, n);
			PS_CHECK(failures, ps_pattern_check(buf, off, n) == -1,
				 "fill/check disagree at %llu+%zu", (unsigned long long)off, n);
			for (size_t i = 0; i < n; i++)
				PS_CHECK(failures, buf[i] == ps_pattern_byte(off + i),
					 "fill != byte at %llu", (unsigned long long)(off + i));
		}
	}
	ps_pattern_fill(buf, 12345, sizeof(buf));
	buf[1000] ^= 0x10;
	PS_CHECK(failures, ps_pattern_check(buf, 12345, sizeof(buf)) == 1000, "mismatch not found");
	/* No period at any power of two up to 1 GiB: shifted blocks differ. */
	for (int k = 0; k <= 30; k++) {
		uint8_t a[64], b[64];

		ps_pattern_fill(a, 0, sizeof(a));
		ps_pattern_fill(b, 1ULL << k, sizeof(b));
		PS_CHECK(failures, memcmp(a, b, sizeof(a)) != 0, "pattern has period 2^%d", k);
	}
	return failures;
}

/* A byte source over memory that returns at most `step` bytes per read. */
struct ps_mem_src {
	const char *p;
	size_t n, pos, step;
};

static inline ssize_t ps_mem_read(void *ctx, void *dst, size_t n)
{
	struct ps_mem_src *m = ctx;
	size_t take = m->n - m->pos;

	if (take > m->step)
		take = m->step;
	if (take > n)
		take = n;
	memcpy(dst, m->p + m->pos, take);
	m->pos += take;
	return (ssize_t)take;
}

/*
 * Reads messages from text until it ends; writes each message's body
 * followed by '|' to out. Returns NULL, or the first error.
 */
static inline const char *ps_selftest_decode(const char *text, size_t step, bool request,
					     char *out, size_t out_size)
{
	struct ps_mem_src src = { text, strlen(text), 0, step };
	uint8_t storage[PS_HEAD_MAX + 1024];
	struct ps_in in;
	size_t used = 0;

	ps_in_init(&in, storage, sizeof(storage), 0, ps_mem_read, &src);
	for (;;) {
		const char *head, *err;
		const uint8_t *data;
		size_t len;
		struct ps_head h;
		struct ps_body b;
		int r = ps_in_head(&in, PS_HEAD_MAX, request, &head, &len);

		if (r <= 0) {
			out[used] = '\0';
			return r < 0 ? in.err : NULL;
		}
		if ((err = ps_head_parse(head, len, request, &h)))
			return err;
		if (request)
			ps_body_init_request(&b, &h);
		else
			ps_body_init_response(&b, &h, false);
		while ((r = ps_body_next(&in, &b, &data, &len)) > 0) {
			if (used + len + 2 > out_size)
				return "selftest output overflow";
			memcpy(out + used, data, len);
			used += len;
		}
		if (r < 0)
			return in.err;
		out[used++] = '|';
	}
}

static inline int ps_selftest_http(void)
{
	static const struct {
		bool request;
		const char *in;
		const char *bodies;	/* expected, '|' after each message */
		const char *err;	/* expected error, or NULL */
	} cases[] = {
		{ true, "\r\nPOST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
			"5\r\nhello\r\n6;ext=\"v\"\r\n world\r\n0\r\nT: v\r\n\r\n"
			"GET /b HTTP/1.0\r\n\r\n"
			"PUT /c HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
		  "hello world||abc|", NULL },
		{ false, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
			 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200\r\n\r\nrest",
		  "||ok|rest|", NULL },
		{ true, "GET / HTTP/1.1\nHost: x\n\n", "", "bare LF in head" },
		{ true, "GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n", "", "obsolete header line folding" },
		{ true, "GET / HTTP/1.1\r\nHost : x\r\n\r\n", "", "bad header line" },
		{ true, "GET / HTTP/2.0\r\n\r\n", "", "bad HTTP version" },
		{ true, "GET  / HTTP/1.1\r\n\r\n", "", "bad request target" },
		{ true, "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "",
		  "conflicting Content-Length" },
		{ true, "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", "", "bad Content-Length" },
		{ true, "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		  "", "both Transfer-Encoding and Content-Length" },
		{ true, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "",
		  "unsupported Transfer-Encoding" },
		{ true, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "",
		  "bad chunk size line" },
		{ true, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY\r\n", "",
		  "chunk data not followed by CRLF" },
		{ true, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc", "",
		  "connection closed mid-body" },
	};
	int failures = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t step = 1; step <= 4096; step *= 4096) {
			char out[256] = "";
			const char *err = ps_selftest_decode(cases[i].in, step, cases[i].request,
							     out, sizeof(out));

			if (cases[i].err) {
				PS_CHECK(failures, err && !strcmp(err, cases[i].err),
					 "case %zu step %zu: error \"%s\", want \"%s\"", i, step,
					 err ? err : "(none)", cases[i].err);
			} else {
				PS_CHECK(failures, !err && !strcmp(out, cases[i].bodies),
					 "case %zu step %zu: bodies \"%s\" error \"%s\"", i, step,
					 out, err ? err : "(none)");
			}
		}
	}
	PS_CHECK(failures, ps_list_has("foo, Keep-Alive ,bar", 20, "keep-alive"), "token list");
	PS_CHECK(failures, !ps_list_has("keep-alived", 11, "keep-alive"), "token prefix");
	return failures;
}

/* Runs every self test; returns the number of failed checks. */
static inline int ps_selftest(void)
{
	return ps_selftest_sha1_base64() + ps_selftest_ws_frames() + ps_selftest_pattern() +
	       ps_selftest_http();
}

#endif /* PS_TOOLS_SELFTEST_H */
