/* fuzz.h - what every harness in tests/fuzz/ shares.
 *
 * A harness is one LLVMFuzzerTestOneInput over the real code. It checks the
 * contract of the function it drives and aborts (GW_FUZZ_CHECK) when the
 * contract is broken, so that a wrong answer is a finding just as a crash
 * is. The same harness links either with libFuzzer (fuzz_<name>, GW_FUZZ=ON
 * with clang) or with replay.c (test_fuzz_replay_<name>, every build), which
 * runs it over the committed corpus and crashes/ files. */
#ifndef GW_FUZZ_H
#define GW_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GW_FUZZ_CHECK(cond)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
