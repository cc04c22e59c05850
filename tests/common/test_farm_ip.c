/* test_farm_ip.c - prompt-farming records per client address
 * (common/farm_ip.c): the ladder per address on an injected clock, a
 * reclaimed and reused ip account starting clean, the table full and its
 * stale entries claimed again, a claim left half done by a dead process
 * finished by the next user, the state across a re-attach, the audit line,
 * and the "ip.farming" config with its mistakes named by path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"
#include "seg_internal.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

#define NOW 1700000000000000ull
#define SEC 1000000ull

static const struct gw_seg_config ip_cfg = {
    .accounts = 64,
    .budgets = 16,
    .slots = 16,
    .queue = 8,
    .lanes = 8,
    .prompt_bytes = 256,
    .output_bytes = 256,
    .ip_farm_recs = 16,
};

static struct gw_acct ip(struct fx *f, const char *addr, uint64_t now)
{
    struct gw_acct a;
    assert_int_equal(gw_ledger_get(&f->seg, GW_KIND_IP, addr, strlen(addr), 1, now, &a), 0);
    return a;
}

static struct gw_farm_limits small_ladder(void)
{
    struct gw_farm_limits l = {.enabled = 1,
                               .window = 8,
                               .min_samples = 4,
                               .near_bits = 0,
                               .sweep_cv_pct = 0,
                               .sweep_single_pct = 90,
                               .flag_score = 60,
                               .throttle_after = 3,
                               .refuse_after = 5,
                               .throttle = {.limit = 1, .period_us = SEC},
                               .refuse_ttl_s = 60};
    return l;
}

static void test_address_ladder_flags_throttles_refuses(void **state)
{
    (void)state;
    struct fx *f = fx_open(&ip_cfg);
    struct gw_acct a = ip(f, "127.0.0.1", NOW), b = ip(f, "10.0.0.2", NOW);
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    struct gw_farm_state st;
    /* no record before its first prompt */
    assert_int_equal(gw_farm_ip_get(&f->seg, a, NOW, &st), -ENOENT);
    assert_int_equal(gw_farm_ip_clear(&f->seg, a), -ENOENT);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            gw_farm_ip_observe(&f->seg, a, 0xfeedull, 1, NOW + (uint64_t)i * SEC, &l, &v), 0);
        assert_int_equal(v.level, GW_FARM_NONE);
    }
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0xfeedull, 1, NOW + 3 * SEC, &l, &v), 0);
    assert_int_equal(v.s.score, 100);
    assert_int_equal(v.prev_level, GW_FARM_NONE);
    assert_int_equal(v.level, GW_FARM_FLAGGED);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0xfeedull, 1, NOW + 4 * SEC, &l, &v), 0);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0xfeedull, 1, NOW + 5 * SEC, &l, &v), 0);
    assert_int_equal(v.level, GW_FARM_THROTTLED);
    assert_int_equal(v.throttled, 0);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0xfeedull, 1, NOW + 5 * SEC, &l, &v), 0);
    assert_int_equal(v.throttled, 1);
    assert_int_equal(v.retry_us, SEC);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0xfeedull, 1, NOW + 6 * SEC, &l, &v), 0);
    assert_int_equal(v.level, GW_FARM_REFUSED);
    assert_int_equal(v.refuse, 1);
    assert_int_equal(v.until_s, NOW / SEC + 66);
    /* the other address has its own record: untouched */
    assert_int_equal(gw_farm_ip_get(&f->seg, b, NOW, &st), -ENOENT);
    assert_int_equal(gw_farm_ip_observe(&f->seg, b, 0xfeedull, 1, NOW + 6 * SEC, &l, &v), 0);
    assert_int_equal(v.level, GW_FARM_NONE);
    assert_int_equal(v.s.n, 1);
    assert_int_equal(gw_farm_ip_get(&f->seg, a, NOW + 7 * SEC, &st), 0);
    assert_int_equal(st.level, GW_FARM_REFUSED);
    assert_int_equal(st.seen, 8);
    assert_int_equal(st.strikes, 5);
    assert_int_equal(st.strikes_total, 5);
    assert_int_equal(st.refused_total, 2);
    assert_int_equal(st.until_s, NOW / SEC + 66);
    /* clear: off the ladder, the evidence gone, the totals kept */
    assert_int_equal(gw_farm_ip_clear(&f->seg, a), 0);
    assert_int_equal(gw_farm_ip_get(&f->seg, a, NOW + 7 * SEC, &st), 0);
    assert_int_equal(st.level, GW_FARM_NONE);
    assert_int_equal(st.strikes, 0);
    assert_int_equal(st.strikes_total, 5);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0xfeedull, 1, NOW + 8 * SEC, &l, &v), 0);
    assert_int_equal(v.s.n, 1);
    assert_int_equal(v.level, GW_FARM_NONE);
    /* bad arguments */
    l.window = 0;
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 1, 1, NOW, &l, &v), -EINVAL);
    assert_int_equal(gw_farm_ip_observe(NULL, a, 1, 1, NOW, &l, &v), -EINVAL);
    fx_close(f);
}

static void test_reclaimed_account_starts_clean(void **state)
{
    (void)state;
    struct fx *f = fx_open(&ip_cfg);
    struct gw_acct a = ip(f, "192.0.2.7", NOW);
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    struct gw_farm_state st;
    for (int i = 0; i < 6; i++)
        assert_int_equal(
            gw_farm_ip_observe(&f->seg, a, 0xabcull, 1, NOW + (uint64_t)i * SEC, &l, &v), 0);
    assert_int_equal(v.level, GW_FARM_THROTTLED);
    /* the account is idle: the master's sweep reclaims it */
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, NOW + 10 * SEC), 1);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0xabcull, 1, NOW + 11 * SEC, &l, &v),
                     GW_ESTALE);
    assert_int_equal(gw_farm_ip_get(&f->seg, a, NOW, &st), GW_ESTALE);
    /* the same address again: same entry, next generation, no evidence */
    struct gw_acct a2 = ip(f, "192.0.2.7", NOW + 12 * SEC);
    assert_int_equal(a2.index, a.index);
    assert_true(a2.gen != a.gen);
    assert_int_equal(gw_farm_ip_get(&f->seg, a2, NOW + 12 * SEC, &st), -ENOENT);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a2, 0xabcull, 1, NOW + 12 * SEC, &l, &v), 0);
    assert_int_equal(v.s.n, 1);
    assert_int_equal(v.level, GW_FARM_NONE);
    assert_int_equal(gw_farm_ip_get(&f->seg, a2, NOW + 12 * SEC, &st), 0);
    assert_int_equal(st.seen, 1);
    assert_int_equal(st.strikes_total, 0);
    assert_int_equal(st.refused_total, 0);
    fx_close(f);
}

static void test_table_full_then_stale_entries_are_claimed(void **state)
{
    (void)state;
    struct fx *f = fx_open(&ip_cfg); /* 16 records: every address probes all of them */
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    struct gw_acct a[17];
    char addr[32];
    for (int i = 0; i < 17; i++) {
        snprintf(addr, sizeof(addr), "10.1.0.%d", i + 1);
        a[i] = ip(f, addr, NOW);
    }
    for (int i = 0; i < 16; i++)
        assert_int_equal(gw_farm_ip_observe(&f->seg, a[i], 0x77ull, 1, NOW, &l, &v), 0);
    /* a 17th live address finds no entry: not judged */
    assert_int_equal(gw_farm_ip_observe(&f->seg, a[16], 0x77ull, 1, NOW, &l, &v), GW_EFULL);
    assert_int_equal(v.refuse, 0);
    assert_int_equal(v.level, GW_FARM_NONE);
    /* a second prompt of a recorded address still finds its own */
    assert_int_equal(gw_farm_ip_observe(&f->seg, a[3], 0x77ull, 1, NOW + 1, &l, &v), 0);
    assert_int_equal(v.s.n, 2);
    /* the accounts go idle and are reclaimed: their entries are stale */
    assert_int_equal(gw_ledger_reclaim_idle(&f->seg, NOW + 10 * SEC), 17);
    struct gw_acct n = ip(f, "10.9.9.9", NOW + 11 * SEC);
    assert_int_equal(gw_farm_ip_observe(&f->seg, n, 0x77ull, 1, NOW + 11 * SEC, &l, &v), 0);
    assert_int_equal(v.s.n, 1); /* a stale entry, reset before use */
    struct gw_farm_state st;
    assert_int_equal(gw_farm_ip_get(&f->seg, n, NOW + 11 * SEC, &st), 0);
    assert_int_equal(st.seen, 1);
    fx_close(f);
}

static void test_no_table_means_no_records(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL); /* ip_farm_recs 0 */
    struct gw_acct a = ip(f, "127.0.0.1", NOW);
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    assert_null(f->seg.farm_ip);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 1, 1, NOW, &l, &v), -ENOENT);
    /* a file made with another count is refused by name */
    struct gw_segment s2;
    char err[256];
    assert_int_equal(gw_segment_open(&s2, f->path, &ip_cfg, err, sizeof(err)), GW_ELAYOUT);
    char want[512];
    snprintf(want, sizeof(want),
             "%s: created with ip_farm_recs=0, config asks for 16 (move the file away to "
             "start over with new sizes)",
             f->path);
    assert_string_equal(err, want);
    /* the region's size: 1152 bytes a record, at most 2^20 records */
    struct gw_seg_config c = ip_cfg;
    c.ip_farm_recs = 0;
    size_t none = gw_segment_size(&c, err, sizeof(err));
    c.ip_farm_recs = 16;
    assert_int_equal(gw_segment_size(&c, err, sizeof(err)), none + 16 * 1152);
    c.ip_farm_recs = (1u << 20) + 1;
    assert_int_equal(gw_segment_size(&c, err, sizeof(err)), 0);
    assert_string_equal(err, "ip_farm_recs=1048577: at most 2^20");
    fx_close(f);
}

static void test_half_done_claim_is_finished_by_the_next_user(void **state)
{
    (void)state;
    struct fx *f = fx_open(&ip_cfg);
    struct gw_acct a = ip(f, "198.51.100.1", NOW);
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0x55ull, 1, NOW, &l, &v), 0);
    /* find its entry; make it look like a claimer died after its tag CAS
     * and before the reset: tag CLEANING, the previous owner's words left */
    struct gw_farm_iprec *e = NULL;
    for (uint32_t i = 0; i < ip_cfg.ip_farm_recs; i++)
        if (atomic_load(&f->seg.farm_ip[i].tag))
            e = &f->seg.farm_ip[i];
    assert_non_null(e);
    atomic_store(&e->tag, atomic_load(&e->tag) | (1ull << 63));
    atomic_store(&e->rec.ladder, 3ull | 5ull << 2 | (NOW / SEC + 600) << 24); /* refused */
    atomic_store(&e->rec.seen, 40);
    atomic_store(&e->rec.strikes, 9);
    /* the next look (show) finishes the claim: clean, tag published */
    struct gw_farm_state st;
    assert_int_equal(gw_farm_ip_get(&f->seg, a, NOW + SEC, &st), 0);
    assert_int_equal(st.level, GW_FARM_NONE);
    assert_int_equal(st.seen, 0);
    assert_int_equal(st.strikes_total, 0);
    assert_int_equal(atomic_load(&e->tag) >> 63, 0);
    assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0x55ull, 1, NOW + SEC, &l, &v), 0);
    assert_int_equal(v.refuse, 0);
    assert_int_equal(v.s.n, 1);
    fx_close(f);
}

/* Children record prompts for twelve addresses as fast as they can and are
 * SIGKILLed at random instructions; between rounds the addresses' accounts
 * are reclaimed and twelve new ones made, so the next round claims stale
 * entries while being killed. Afterwards every address's record is found
 * (a claim left "cleaning" is finished by the look), its ladder is one
 * whole decision, no entry is left "cleaning", and the next prompt counts. */
static void test_processes_killed_while_claiming_and_recording(void **state)
{
    (void)state;
    struct fx *f = fx_open(&ip_cfg);
    struct gw_farm_limits l = small_ladder();
    l.throttle_after = 1000;
    l.refuse_after = 100000;
    struct gw_acct a[12];
    char addr[32];
    for (int round = 0; round < 3; round++) {
        if (round)
            assert_int_equal(gw_ledger_reclaim_idle(&f->seg, NOW + (uint64_t)round * 100 * SEC),
                             12);
        for (int i = 0; i < 12; i++) {
            snprintf(addr, sizeof(addr), "10.3.%d.%d", round, i);
            a[i] = ip(f, addr, NOW + (uint64_t)round * 100 * SEC);
        }
        pid_t kids[3];
        for (int k = 0; k < 3; k++) {
            kids[k] = fork();
            assert_true(kids[k] >= 0);
            if (kids[k] == 0) {
                struct gw_farm_verdict v;
                for (uint64_t i = 0; i < 20000; i++)
                    gw_farm_ip_observe(&f->seg, a[(i + (uint64_t)k * 5) % 12], 0x5555ull, 1,
                                       NOW + i, &l, &v);
                _exit(0);
            }
        }
        usleep(1000 + 2000 * (useconds_t)round);
        for (int k = 0; k < 3; k++) {
            kill(kids[k], SIGKILL);
            waitpid(kids[k], NULL, 0);
        }
    }
    for (int i = 0; i < 12; i++) {
        struct gw_farm_state st;
        int rc = gw_farm_ip_get(&f->seg, a[i], NOW, &st);
        assert_true(rc == 0 || rc == -ENOENT); /* -ENOENT: killed before any claim */
        if (rc == 0)
            assert_int_equal(st.level, st.strikes == 0      ? GW_FARM_NONE
                                       : st.strikes >= 1000 ? GW_FARM_THROTTLED
                                                            : GW_FARM_FLAGGED);
        struct gw_farm_verdict v;
        assert_int_equal(gw_farm_ip_observe(&f->seg, a[i], 0x5555ull, 1, NOW + SEC, &l, &v), 0);
        assert_int_equal(gw_farm_ip_get(&f->seg, a[i], NOW + SEC, &st), 0);
        assert_true(st.seen >= 1);
        assert_int_equal(st.last_fp, 0x5555ull);
    }
    for (uint32_t e = 0; e < ip_cfg.ip_farm_recs; e++)
        assert_int_equal(atomic_load(&f->seg.farm_ip[e].tag) >> 63, 0);
    fx_close(f);
}

static void test_state_survives_a_reattach(void **state)
{
    (void)state;
    struct fx *f = fx_open(&ip_cfg);
    struct gw_acct a = ip(f, "203.0.113.5", NOW);
    struct gw_farm_limits l = small_ladder();
    struct gw_farm_verdict v;
    for (int i = 0; i < 5; i++)
        assert_int_equal(gw_farm_ip_observe(&f->seg, a, 0x99ull, 1, NOW + (uint64_t)i, &l, &v), 0);
    gw_segment_close(&f->seg);
    assert_int_equal(gw_segment_open(&f->seg, f->path, &ip_cfg, f->err, sizeof(f->err)), 0);
    struct gw_farm_state st;
    assert_int_equal(gw_farm_ip_get(&f->seg, a, NOW + 10, &st), 0);
    assert_int_equal(st.seen, 5);
    assert_int_equal(st.level, GW_FARM_FLAGGED);
    assert_int_equal(st.strikes, 2);
    fx_close(f);
}

static void test_audit_line_names_the_address(void **state)
{
    (void)state;
    struct gw_farm_verdict v = {.level = GW_FARM_FLAGGED,
                                .strikes = 1,
                                .s = {.n = 16,
                                      .near = 15,
                                      .near_pct = 100,
                                      .cv_pct = 3,
                                      .single_pct = 100,
                                      .sweep = 0,
                                      .score = 100,
                                      .nearest_bits = 4,
                                      .fp = 0x1ull,
                                      .nearest_fp = 0x11ull}};
    char line[1024];
    size_t n = gw_farm_ip_audit_line(line, sizeof(line), NOW + 123456, "2001:db8::/64", &v);
    const char *want =
        "{\"time\":\"2023-11-14T22:13:20.123Z\",\"event\":\"farming\",\"address\":"
        "\"2001:db8::/64\",\"level\":\"flagged\",\"strikes\":1,\"score\":100,\"near_pct\":100,"
        "\"near\":15,\"n\":16,\"cv_pct\":3,\"single_pct\":100,\"sweep\":0,"
        "\"fp\":\"0000000000000001\",\"nearest_fp\":\"0000000000000011\",\"nearest_bits\":4}\n";
    assert_string_equal(line, want);
    assert_int_equal(n, strlen(want));
    gw_farm_ip_audit_line(line, sizeof(line), NOW, "10.0.0.1\"x", &v);
    assert_non_null(strstr(line, "\"address\":\"10.0.0.1?x\""));
}

/* ----------------------------------------------------------------- config */

static char secret[128];

static int make_secret(void **state)
{
    (void)state;
    snprintf(secret, sizeof(secret), "/tmp/gw-farmip-secret-%d", (int)getpid());
    FILE *f = fopen(secret, "w");
    fputs("farm-test-secret-0123456789abcdef0123456789", f);
    fclose(f);
    return 0;
}

static int drop_secret(void **state)
{
    (void)state;
    unlink(secret);
    return 0;
}

static int parse(const char *ip, struct gw_config **cfg, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"state_dir\": \"./run\", \"model\": {\"path\": \"m.gguf\", \"name\": \"tiny\"},"
             " \"auth\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret_file\": "
             "\"%s\"}]}, \"plans\": {\"p\": {}}%s%s}",
             secret, ip ? ", \"ip\": " : "", ip ? ip : "");
    *cfg = NULL;
    err[0] = '\0';
    return gw_config_parse(cfg, text, strlen(text), "farmip.json", err, errlen);
}

static void test_config_defaults_and_values(void **state)
{
    (void)state;
    struct gw_config *cfg;
    char err[2048];
    assert_int_equal(parse(NULL, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg->ip.farm.enabled, 0); /* off by default */
    assert_int_equal(cfg->ip.farm.window, 32);
    assert_int_equal(cfg->segment.ip_farm_recs, 4096);
    gw_config_free(cfg);
    assert_int_equal(parse("{\"farming\": {\"enabled\": true, \"window\": 24, \"min_samples\": 12,"
                           " \"flag_score\": 70, \"refuse_after\": 40, \"ban_ttl_s\": 3600,"
                           " \"records\": 256}}",
                           &cfg, err, sizeof(err)),
                     0);
    assert_string_equal(err, "");
    assert_int_equal(cfg->ip.farm.enabled, 1);
    assert_int_equal(cfg->ip.farm.window, 24);
    assert_int_equal(cfg->ip.farm.min_samples, 12);
    assert_int_equal(cfg->ip.farm.flag_score, 70);
    assert_int_equal(cfg->ip.farm.throttle_after, 32);
    assert_int_equal(cfg->ip.farm.refuse_after, 40);
    assert_int_equal(cfg->ip.farm.ban_ttl_s, 3600);
    assert_int_equal(cfg->segment.ip_farm_recs, 256);
    gw_config_free(cfg);
}

static void expect(const char *ip, const char *want)
{
    char err[2048];
    struct gw_config *cfg;
    int rc = parse(ip, &cfg, err, sizeof(err));
    if (rc != -EINVAL || strcmp(err, want) != 0)
        print_error("ip %s\n", ip);
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_string_equal(err, want);
}

static void test_config_mistakes_are_named_by_path(void **state)
{
    (void)state;
    expect("{\"farming\": true}", "config: ip.farming: expected an object");
    expect("{\"farming\": {\"enabled\": \"yes\"}}",
           "config: ip.farming.enabled: expected true or false");
    expect("{\"farming\": {\"record\": 5}}", "config: ip.farming.record: unknown key");
    expect("{\"farming\": {\"window\": 3}}",
           "config: ip.farming.window: expected an integer in [4, 64]");
    expect("{\"farming\": {\"records\": 2000000}}",
           "config: ip.farming.records: expected an integer in [0, 1048576]");
    expect("{\"farming\": {\"enabled\": true, \"records\": 8}}",
           "config: ip.farming.records: 8: at least 16 while enabled");
    expect("{\"farming\": {\"window\": 8}}",
           "config: ip.farming.min_samples: 16 is more than window (8)");
    expect("{\"farming\": {\"throttle\": \"3 per eon\"}}",
           "config: ip.farming.throttle: \"3 per eon\": expected \"N per "
           "second|minute|hour|day [burst M]\"");
    expect("{\"farming\": {\"ignore_prefix\": [\"Summarize: \"]}}",
           "config: ip.farming.ignore_prefix: not an address key: the fingerprint cuts the "
           "tenant plan's ignore_prefix");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_ladder_flags_throttles_refuses),
        cmocka_unit_test(test_reclaimed_account_starts_clean),
        cmocka_unit_test(test_table_full_then_stale_entries_are_claimed),
        cmocka_unit_test(test_no_table_means_no_records),
        cmocka_unit_test(test_half_done_claim_is_finished_by_the_next_user),
        cmocka_unit_test(test_processes_killed_while_claiming_and_recording),
        cmocka_unit_test(test_state_survives_a_reattach),
        cmocka_unit_test(test_audit_line_names_the_address),
        cmocka_unit_test(test_config_defaults_and_values),
        cmocka_unit_test(test_config_mistakes_are_named_by_path),
    };
    return cmocka_run_group_tests(tests, make_secret, drop_secret);
}
