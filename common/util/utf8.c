/* utf8.c - strict UTF-8 checks for what leaves the node (responses, audit
 * lines, streamed chunks). */
#include "gw_util.h"

#include <string.h>

/* The sequence at s (n > 0 bytes available), per Unicode table 3-7: its
 * length when valid; 0 when s[0] cannot start a sequence or a later byte is
 * wrong; -1 when the bytes present are a valid start that n cut short. */
int gw_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80)
        return 1;
    if (c < 0xC2) /* continuation byte, or C0/C1 (overlong ASCII) */
        return 0;
    if (c < 0xE0) {
        need = 2;
    } else if (c < 0xF0) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c < 0xF5) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return -1;
        if (s[i] < lo || s[i] > hi)
            return 0;
        lo = 0x80;
        hi = 0xBF;
    }
    return (int)need;
}

int gw_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = gw_utf8_seq(u + i, len - i);
        if (k <= 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

size_t gw_utf8_complete(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    /* Only the last three bytes can hold a sequence still waiting for its
     * end; find its lead byte, if any. */
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned c = u[len - back];
        if (c >= 0x80 && c < 0xC0)
            continue; /* continuation: keep looking for the lead */
        if (c >= 0xC0 && gw_utf8_seq(u + len - back, back) == -1)
            return len - back;
        break;
    }
    return len;
}

size_t gw_utf8_replace(char *out, const char *s, size_t n, const char *mark, size_t mark_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        int k = gw_utf8_seq(u + i, n - i);
        if (k > 0) {
            memcpy(out + o, u + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(out + o, mark, mark_len);
            o += mark_len;
            i++;
        }
    }
    return o;
}
