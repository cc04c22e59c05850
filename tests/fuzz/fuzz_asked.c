/* fuzz_asked.c - prompt bytes into gw_asked_count (supervisor/repeat_ask.c),
 * the count of repetitions the front reads from every admitted prompt.
 * Contracts: the answer is at most GW_ASKED_MAX and the same twice; the
 * same bytes as a chat's last user message give the same answer; and the
 * message with " forever" appended asks for nothing (the endless words
 * override any count). */
#include "fuzz.h"
#include "gw_supervisor.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    uint32_t n = gw_asked_count(text, size);
    GW_FUZZ_CHECK(n <= GW_ASKED_MAX);
    GW_FUZZ_CHECK(gw_asked_count(text, size) == n);
    if (size > 65536 || memchr(data, 0, size))
        return 0; /* a chat message holds no NUL */
    char *buf = malloc(size + 16);
    GW_FUZZ_CHECK(buf != NULL);
    memcpy(buf, "user", 5); /* role NUL content */
    memcpy(buf + 5, data, size);
    GW_FUZZ_CHECK(gw_asked_count_prompt(buf, size + 5, 1) == n);
    /* " forever" as a word of its own: the last one before it may not be
     * cut (8192 words at most are read), so only for shorter inputs */
    if (size < 8000) {
        memcpy(buf, data, size);
        memcpy(buf + size, " forever", 8);
        GW_FUZZ_CHECK(gw_asked_count(buf, size + 8) == 0);
    }
    free(buf);
    return 0;
}
