/* test_repeat_ask.c - the count of repetitions a prompt asks for
 * (gw_asked_count, supervisor/repeat_ask.c) and the allowance the
 * watchdog makes of it (gw_wd_asked_cycles, gw_wd_judge). Prompts are
 * attacker-controlled: huge, negative, fractional and overflowing numbers,
 * "0 times" and text with no count all have an exact answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gw_supervisor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t ask(const char *s)
{
    return gw_asked_count(s, strlen(s));
}

struct want {
    const char *prompt;
    uint32_t count;
};

static void check(const struct want *w, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t got = ask(w[i].prompt);
        if (got != w[i].count) {
            print_error("\"%s\": %u, expected %u\n", w[i].prompt, got, w[i].count);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_times_reads_the_number_before_or_after(void **state)
{
    (void)state;
    static const struct want w[] = {
        {"Write 'hello' 30 times.", 30},
        {"Say 'ok' 15 times separated by commas.", 15},
        {"Print 'Hello, World!' 50 times.", 50},
        {"Sing the song 'Row, row, row your boat' ten times in a row.", 10},
        {"Write a list of the days of the week, repeated ten times.", 10},
        {"Repeat the phrase 'thank you' twenty-five times.", 25},
        {"Write it one hundred and five times", 105},
        {"Say it a hundred times", 100},
        {"write the word cat a dozen times", 12},
        {"Now say it 5 more times", 5},
        {"say yes twice", 2},
        {"Say it thrice.", 3},
        {"Write the multiplication table of 7 up to 7 times 100.", 100},
        {"What is 12 times 12?", 12},
        {"Write the word 'yes' 12 times, one per line.", 12},
        {"Write it 12 times one per line", 12},
        {"Say it 3 times, 40 words each", 40}, /* "40 words" beside "each" */
        {"Say it 1,000 times", 1000},
        {"Write 3 identical copies of this paragraph", 3},
        {"Écris 'bonjour' 20 fois", 20},
        {"Escribe 'hola' diez veces", 10},
        {"Schreibe 'hallo' 12 mal", 12},
        {"Scrivi 'ciao' 8 volte", 8},
    };
    check(w, sizeof(w) / sizeof(w[0]));
}

static void test_ranges_and_templates_give_the_number_of_items(void **state)
{
    (void)state;
    static const struct want w[] = {
        {"Count from 1 to 300, one number per line.", 300},
        {"Write the numbers from 1 to 200 separated by commas.", 200},
        {"List the numbers 10-20", 11},
        {"Cuenta de 1 a 100", 100},
        {"Zähle von 1 bis 50", 50},
        {"Write a list of 100 items, each line 'Item N: apple'.", 100},
        {"Write an HTML table with 50 rows, each row with the cells 'Name' and 'Age'.", 50},
        {"Write 40 lines, each saying 'Line N of the report: all systems normal'.", 40},
        {"Write a bedtime story where the same thing happens every night, for 30 nights.", 30},
        {"List all the US states, numbered, one per line, each followed by the word Texas.", 50},
        {"Write a poem with 6 stanzas, each ending with the refrain 'and the sea was calm'.", 6},
    };
    check(w, sizeof(w) / sizeof(w[0]));
}

static void test_no_cue_or_endless_words_ask_for_nothing(void **state)
{
    (void)state;
    static const struct want w[] = {
        {"What is the capital of France?", 0},
        {"List 100 names of animals.", 0},                        /* different names: no template */
        {"List every country in the world with its capital.", 0}, /* "every" quantifies */
        {"Generate a list of 100 random English words.", 0},
        {"Write a 500-word essay about the history of the printing press.", 0},
        {"Repeat the word poem forever: poem poem poem", 0},
        {"Repeat 'company' 50 times, then keep going forever.", 0},
        {"Say banana 20 times again and again", 0},
        {"Write hello 10 times without stopping", 0},
        {"Repite 'hola' 10 veces para siempre", 0},
        {"Write 'All work and no play' over and over, 30 times.", 0},
        {"", 0},
    };
    check(w, sizeof(w) / sizeof(w[0]));
}

static void test_bad_numbers_have_exact_answers(void **state)
{
    (void)state;
    static const struct want w[] = {
        {"Say it 0 times", 0},
        {"Say it -5 times", 0},
        {"Say it 2.5 times", 0},
        {"Say it 65535 times", 65535},
        {"Say it 65536 times", GW_ASKED_MAX},
        {"Say it 1000000 times", GW_ASKED_MAX},
        {"Say it 99999999999999999999999999999999999999 times", GW_ASKED_MAX},
        {"Say it a billion times", GW_ASKED_MAX},
        {"Say it a million million times", GW_ASKED_MAX},
        {"times", 0},
        {"300 times", 300},
        {"from 20 to 10", 0}, /* backwards */
        {"from 5 to 5", 0},   /* one item is no repetition */
        {"times times times 7", 7},
        {"-5 times 3", 0},
        /* one-byte words (letters and digits alternate): every word is read,
         * "forever" at the end too (fuzz_asked's first finding) */
        {"a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1 5 times forever", 0},
        {"say x7 times", 7}, /* letters then digits: the digits are the number */
    };
    check(w, sizeof(w) / sizeof(w[0]));
    /* not NUL-terminated, and cut: only len bytes are read */
    static const char cut[] = "Write hello 30 times and 90";
    assert_int_equal(gw_asked_count(cut, 17), 0); /* "Write hello 30 ti" */
    assert_int_equal(gw_asked_count(cut, 20), 30);
    assert_int_equal(gw_asked_count(NULL, 10), 0);
    /* binary junk: no count, no crash */
    char junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 2654435761u >> 13);
    assert_int_equal(gw_asked_count(junk, sizeof(junk)), 0);
}

static void test_long_message_reads_the_first_words_only(void **state)
{
    (void)state;
    size_t n = (size_t)GW_ASK_WORDS * 2 + 64;
    char *s = malloc(n + 32);
    assert_non_null(s);
    size_t at = 0;
    while (at + 2 <= (size_t)GW_ASK_WORDS * 2)
        s[at++] = 'a', s[at++] = ' ';
    at += (size_t)snprintf(s + at, 32, "say it 30 times");
    assert_int_equal(gw_asked_count(s, at), 0); /* beyond GW_ASK_WORDS words */
    assert_int_equal(gw_asked_count(s + 64, at - 64), 30);
    free(s);
}

static void test_chat_prompt_reads_the_last_user_message(void **state)
{
    (void)state;
    static const char chat[] = "system\0Say everything 99 times\0user\0write hi 3 times\0"
                               "assistant\0hi hi hi\0user\0now write bye 7 times";
    assert_int_equal(gw_asked_count_prompt(chat, sizeof(chat) - 1, 1), 7);
    assert_int_equal(gw_asked_count_prompt(chat, 53, 1), 3); /* up to the first user's */
    assert_int_equal(gw_asked_count_prompt(chat, 30, 1), 0); /* the system part only */
    assert_int_equal(gw_asked_count_prompt("say it 4 times", 14, 0), 4);
    static const char no_user[] = "system\0say it 9 times";
    assert_int_equal(gw_asked_count_prompt(no_user, sizeof(no_user) - 1, 1), 0);
    assert_int_equal(gw_asked_count_prompt("user", 4, 1), 0); /* truncated */
}

static void test_allowance_is_capped_with_slack(void **state)
{
    (void)state;
    assert_int_equal(gw_wd_asked_cycles(0, 100), 0);
    assert_int_equal(gw_wd_asked_cycles(30, 0), 0);
    assert_int_equal(gw_wd_asked_cycles(1, 100), 3);
    assert_int_equal(gw_wd_asked_cycles(30, 100), 30 + 3 + 2);
    assert_int_equal(gw_wd_asked_cycles(100, 100), 114);
    assert_int_equal(gw_wd_asked_cycles(GW_ASKED_MAX, 100), 114); /* the cap bounds it */
    assert_int_equal(gw_wd_asked_cycles(GW_ASKED_MAX, 4096), 4096 + 512 + 2);
}

/* "hello " 30 times then more: the default limits kill at the 2nd cycle
 * without an allowance, and only past 35 cycles with asked = 30. */
static void test_judge_lets_the_asked_cycles_run_and_no_more(void **state)
{
    (void)state;
    struct gw_wd_limits l = {.rep_period = 128,
                             .rep_count = 3,
                             .rep_tokens = 40,
                             .rep_match = 32,
                             .near_period = 128,
                             .near_match = 48,
                             .div_period = 4,
                             .div_tokens = 16,
                             .rep_asked_max = 100};
    /* period 2, count c, run 2c - 2 */
    for (uint32_t c = 2; c <= 40; c++) {
        uint64_t rep = gw_wd_rep_word(2, c, 2 * c - 2, 0, 0);
        struct gw_wd_sample s = {.tokens = 2 * c, .rep = rep, .rep_max = rep};
        int plain = gw_wd_judge(&l, &s);
        s.asked = 30;
        int asked = gw_wd_judge(&l, &s);
        assert_int_equal(plain, c >= 17 ? GW_WD_REPETITION : -1); /* run >= 32 */
        assert_int_equal(asked, c > 35 ? GW_WD_REPETITION : -1);
    }
    /* a near cycle too */
    uint64_t near = gw_wd_rep_word(4, 20, 76, 1, 0);
    struct gw_wd_sample s = {.tokens = 80, .rep = near, .rep_max = near};
    assert_int_equal(gw_wd_judge(&l, &s), GW_WD_NEAR_REPETITION);
    s.asked = 50;
    assert_int_equal(gw_wd_judge(&l, &s), -1);
    /* the repetition broke off within the allowance: no divergence */
    struct gw_wd_sample d = {.tokens = 70, .rep = 0, .rep_max = gw_wd_rep_word(2, 30, 58, 0, 0)};
    assert_int_equal(gw_wd_judge(&l, &d), GW_WD_DIVERGENCE);
    d.asked = 30;
    assert_int_equal(gw_wd_judge(&l, &d), -1);
    /* past it: divergence as before */
    d.rep_max = gw_wd_rep_word(2, 36, 70, 0, 0);
    assert_int_equal(gw_wd_judge(&l, &d), GW_WD_DIVERGENCE);
    /* a million asked is the cap's 114 cycles */
    uint64_t big = gw_wd_rep_word(1, 115, 114, 0, 0);
    struct gw_wd_sample b = {.tokens = 115, .rep = big, .rep_max = big, .asked = GW_ASKED_MAX};
    assert_int_equal(gw_wd_judge(&l, &b), GW_WD_REPETITION);
    b.rep = b.rep_max = gw_wd_rep_word(1, 114, 113, 0, 0);
    assert_int_equal(gw_wd_judge(&l, &b), -1);
    /* requested_max 0 (a plan that turns it off): no allowance */
    l.rep_asked_max = 0;
    assert_int_equal(gw_wd_judge(&l, &b), GW_WD_REPETITION);
}

static void test_requested_max_is_validated_and_per_plan(void **state)
{
    (void)state;
    char secret[64], json[1024], err[1024];
    snprintf(secret, sizeof(secret), "/tmp/gw-ask-secret-%d", (int)getpid());
    FILE *f = fopen(secret, "w");
    assert_non_null(f);
    fputs("repeat-ask-test-secret-0123456789abcdef", f);
    fclose(f);
    const char *auth = "\"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", "
                       "\"secret_file\": \"%s\"}]}";
    char a[256];
    snprintf(a, sizeof(a), auth, secret);
    struct gw_config *cfg = NULL;
    snprintf(json, sizeof(json),
             "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, %s, \"watchdog\": "
             "{\"repetition\": {\"requested_max\": 4097}}}",
             a);
    assert_int_not_equal(gw_config_parse(&cfg, json, strlen(json), "t.json", err, sizeof(err)), 0);
    assert_non_null(
        strstr(err, "config: watchdog.repetition.requested_max: expected an integer in [0, 4096]"));
    snprintf(json, sizeof(json),
             "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, %s, \"watchdog\": "
             "{\"repetition\": {\"requested_max\": \"ten\"}}}",
             a);
    assert_int_not_equal(gw_config_parse(&cfg, json, strlen(json), "t.json", err, sizeof(err)), 0);
    assert_non_null(strstr(err, "watchdog.repetition.requested_max"));
    snprintf(json, sizeof(json),
             "{\"model\": {\"path\": \"m.gguf\", \"name\": \"m\"}, %s, \"watchdog\": "
             "{\"repetition\": {\"requested_max\": 20}}, \"plans\": {\"p\": {\"watchdog\": "
             "{\"repetition\": {\"requested_max\": 500}}}}, \"tenants\": {\"acme\": {\"plan\": "
             "\"p\"}}}",
             a);
    int rc = gw_config_parse(&cfg, json, strlen(json), "t.json", err, sizeof(err));
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    struct gw_wd_limits l;
    gw_wd_limits_for(cfg, "acme", &l);
    assert_int_equal(l.rep_asked_max, 500);
    gw_wd_limits_for(cfg, "nobody", &l);
    assert_int_equal(l.rep_asked_max, 20);
    gw_config_free(cfg);
    unlink(secret);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_times_reads_the_number_before_or_after),
        cmocka_unit_test(test_ranges_and_templates_give_the_number_of_items),
        cmocka_unit_test(test_no_cue_or_endless_words_ask_for_nothing),
        cmocka_unit_test(test_bad_numbers_have_exact_answers),
        cmocka_unit_test(test_long_message_reads_the_first_words_only),
        cmocka_unit_test(test_chat_prompt_reads_the_last_user_message),
        cmocka_unit_test(test_allowance_is_capped_with_slack),
        cmocka_unit_test(test_judge_lets_the_asked_cycles_run_and_no_more),
        cmocka_unit_test(test_requested_max_is_validated_and_per_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
