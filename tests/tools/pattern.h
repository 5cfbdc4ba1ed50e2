/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Deterministic body bytes for the pathsplice test tools.
 *
 * The byte at offset N of every generated body is ps_pattern_byte(N), so a
 * receiver can verify a body of any size without the sender's help, and can
 * name the first offset where a proxy dropped, duplicated, reordered or
 * corrupted data.
 *
 * Each aligned 8-byte word is a 64-bit mix (the splitmix64 finaliser) of its
 * word index. The mix is a bijection, so no two words in a body are equal and
 * the stream has no period: a block displaced by any distance (in particular
 * by a power of two, the usual size of a buffer a proxy gets wrong) never
 * lines up with the bytes that belong there. It costs a few multiplies per
 * eight bytes, so generating and checking keeps up with loopback TCP.
 */
#ifndef PS_TOOLS_PATTERN_H
#define PS_TOOLS_PATTERN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The 64-bit word that holds bytes [8 * index, 8 * index + 8). */
static inline uint64_t ps_pattern_word(uint64_t index)
{
	uint64_t z = index + 0x9e3779b97f4a7c15ULL; /* so word 0 is not 0 */

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Byte i of a word is bits [8i, 8i + 8): the same on every host. */
static inline uint8_t ps_pattern_byte(uint64_t offset)
{
	return (uint8_t)(ps_pattern_word(offset >> 3) >> ((offset & 7) * 8));
}

/* Stores the word in the byte order ps_pattern_byte() defines. */
static inline void ps_pattern_store_word(uint8_t *dst, uint64_t w)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(dst, &w, sizeof(w));
#else
	for (int i = 0; i < 8; i++)
		dst[i] = (uint8_t)(w >> (8 * i));
#endif
}

/* Fills buf with the n pattern bytes that start at body offset `offset`. */
static inline void ps_pattern_fill(uint8_t *buf, uint64_t offset, size_t n)
{
	size_t i = 0;

	/* Unaligned head, byte by byte, up to the next word boundary. */
	for (; i < n && ((offset + i) & 7); i++)
		buf[i] = ps_pattern_byte(offset + i);
	for (; i + 8 <= n; i += 8)
		ps_pattern_store_word(buf + i, ps_pattern_word((offset + i) >> 3));
	for (; i < n; i++)
		buf[i] = ps_pattern_byte(offset + i);
}

/*
 * Checks that buf holds the n pattern bytes that start at body offset
 * `offset`. Returns the index in buf of the first wrong byte, or -1.
 */
static inline int64_t ps_pattern_check(const uint8_t *buf, uint64_t offset, size_t n)
{
	uint8_t want[8];
	size_t i = 0;

	for (; i < n && ((offset + i) & 7); i++)
		if (buf[i] != ps_pattern_byte(offset + i))
			return (int64_t)i;
	/* Whole words: compare eight at a time, then find the byte. */
	for (; i + 8 <= n; i += 8) {
		ps_pattern_store_word(want, ps_pattern_word((offset + i) >> 3));
		if (memcmp(buf + i, want, 8) == 0)
			continue;
		for (size_t j = 0; j < 8; j++)
			if (buf[i + j] != want[j])
				return (int64_t)(i + j);
	}
	for (; i < n; i++)
		if (buf[i] != ps_pattern_byte(offset + i))
			return (int64_t)i;
	return -1;
}

#endif /* PS_TOOLS_PATTERN_H */
