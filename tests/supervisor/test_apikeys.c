/* test_apikeys.c - API keys without processes (supervisor/apikeys.c): the
 * key's format and the hash that is all the file keeps, a front's check
 * (accepted, unknown, wrong secret, revoked, malformed, not an API key,
 * API keys off) with exact words, the master's live copy re-read exactly
 * when the segment's generation moves, an unreadable copy refused rather
 * than a stale one used, a malformed keys file never published, the atomic
 * write, and the keys file's bad input with exact errors naming the line
 * or the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"
#include "gw_supervisor.h"

#include <errno.h>
#include <openssl/evp.h>
#include <sys/stat.h>

static char DIR_[128], PATH_[192], LIVE_[192];
static struct gw_config CFG; /* state_dir DIR_, auth.api_keys_file PATH_ */

static int setup(void **state)
{
    (void)state;
    snprintf(DIR_, sizeof(DIR_), "/tmp/gw-apikeys-%d-%ld", (int)getpid(), random());
    mkdir(DIR_, 0700);
    snprintf(PATH_, sizeof(PATH_), "%s/api-keys.json", DIR_);
    snprintf(LIVE_, sizeof(LIVE_), "%s/api-keys.live.json", DIR_);
    unlink(PATH_);
    unlink(LIVE_);
    memset(&CFG, 0, sizeof(CFG));
    snprintf(CFG.state_dir, sizeof(CFG.state_dir), "%s", DIR_);
    snprintf(CFG.api_keys_file, sizeof(CFG.api_keys_file), "%s", PATH_);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof(p), "%s.tmp", PATH_);
    unlink(p);
    unlink(PATH_);
    unlink(LIVE_);
    snprintf(p, sizeof(p), "%s/other", DIR_);
    rmdir(p);
    rmdir(DIR_);
    return 0;
}

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *file_text(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* "Bearer <key>" against cfg's keys (the live copy in its state_dir) */
static int check(struct gw_apikeys *v, struct fx *f, const struct gw_config *cfg, const char *key,
                 struct gw_principal *who, char *id, char *why)
{
    char authz[256];
    snprintf(authz, sizeof(authz), "Bearer %s", key);
    return gw_apikeys_check(v, &f->seg, cfg, authz, strlen(authz), who, id, why, 256);
}

static void test_created_key_has_its_format_and_the_file_keeps_only_its_hash(void **state)
{
    (void)state;
    struct gw_apikey_set set = {0};
    char key[GW_APIKEY_LEN + 1];
    assert_int_equal(gw_apikeys_add(&set, "happy", "", "ci bot", 1700000000, key), 0);
    assert_int_equal(strlen(key), 83);
    assert_memory_equal(key, "sk-gw-", 6);
    assert_true(gw_apikey_id_ok(set.keys[0].id));
    assert_memory_equal(key + 6, set.keys[0].id, 12);
    assert_int_equal(key[18], '-');
    for (int i = 6; i < 83; i++)
        if (i != 18)
            assert_non_null(strchr("0123456789abcdef", key[i]));
    unsigned char d[32];
    unsigned int dl = 0;
    assert_int_equal(EVP_Digest(key, 83, d, &dl, EVP_sha256(), NULL), 1);
    assert_memory_equal(d, set.keys[0].sha256, 32);
    assert_int_equal(gw_apikeys_write(PATH_, &set, NULL, 0), 0);
    const char *text = file_text(PATH_);
    assert_null(strstr(text, key + 19)); /* the secret */
    assert_non_null(strstr(text, "\"tenant\": \"happy\""));
    assert_non_null(strstr(text, "\"plan\": null"));
    struct stat st;
    assert_int_equal(stat(PATH_, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s.tmp", PATH_);
    assert_int_equal(access(tmp, F_OK), -1);
    struct gw_apikey_set back;
    char err[512];
    assert_int_equal(gw_apikeys_read(PATH_, &back, err, sizeof(err)), 0);
    assert_int_equal(back.n, 1);
    assert_memory_equal(&back.keys[0], &set.keys[0], sizeof(back.keys[0]));
    gw_apikeys_free(&back);
    gw_apikeys_free(&set);
}

static void test_check_accepts_and_refuses_with_exact_words(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_apikey_set set = {0};
    char a[GW_APIKEY_LEN + 1], b[GW_APIKEY_LEN + 1];
    assert_int_equal(gw_apikeys_add(&set, "happy", "", "", 1700000000, a), 0);
    assert_int_equal(gw_apikeys_add(&set, "limited", "five", "b", 1700000001, b), 0);
    set.keys[1].revoked_s = 1700000100;
    assert_int_equal(gw_apikeys_publish(&f->seg, &CFG, &set, NULL, 0), 0);
    struct gw_apikeys *v;
    assert_int_equal(gw_apikeys_new(&v), 0);
    struct gw_principal who;
    char id[16], why[256];
    assert_int_equal(check(v, f, &CFG, a, &who, id, why), 0);
    assert_string_equal(who.tenant, "happy");
    assert_string_equal(who.plan, "");
    assert_string_equal(who.kid, "apikey");
    assert_int_equal(who.jti_hash, 0);
    assert_string_equal(id, set.keys[0].id);
    /* the scheme in any case, spaces around the key */
    char authz[256];
    snprintf(authz, sizeof(authz), "bEARER \t %s  ", a);
    assert_int_equal(gw_apikeys_check(v, &f->seg, &CFG, authz, strlen(authz), &who, id, why, 256),
                     0);
    /* revoked: refused by name, only with the right secret */
    assert_int_equal(check(v, f, &CFG, b, &who, id, why), -EACCES);
    assert_string_equal(why, "revoked api key");
    assert_string_equal(id, set.keys[1].id);
    char wrong[GW_APIKEY_LEN + 1];
    snprintf(wrong, sizeof(wrong), "%s", b);
    wrong[82] = wrong[82] == '0' ? '1' : '0';
    assert_int_equal(check(v, f, &CFG, wrong, &who, id, why), -EACCES);
    assert_string_equal(why, "unknown api key");
    snprintf(wrong, sizeof(wrong), "%s", a);
    wrong[82] = wrong[82] == '0' ? '1' : '0';
    assert_int_equal(check(v, f, &CFG, wrong, &who, id, why), -EACCES);
    assert_string_equal(why, "unknown api key");
    assert_string_equal(id, set.keys[0].id); /* the id is logged, never the key */
    snprintf(wrong, sizeof(wrong), "sk-gw-000000000000-%s", a + 19);
    assert_int_equal(check(v, f, &CFG, wrong, &who, id, why), -EACCES);
    assert_string_equal(why, "unknown api key");
    /* malformed: every shape that is not sk-gw-<12 hex>-<64 hex> */
    char upper[GW_APIKEY_LEN + 1], nodash[GW_APIKEY_LEN + 1], longer[GW_APIKEY_LEN + 2];
    snprintf(upper, sizeof(upper), "%s", a);
    upper[30] = 'A';
    snprintf(nodash, sizeof(nodash), "%s", a);
    nodash[18] = '_';
    snprintf(longer, sizeof(longer), "%sa", a);
    const char *malformed[] = {"sk-",
                               "sk-gw-",
                               "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
                               upper,
                               nodash,
                               longer,
                               "sk-gw-00000000000g-0"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        assert_int_equal(check(v, f, &CFG, malformed[i], &who, id, why), -EACCES);
        assert_string_equal(why, "malformed api key");
        assert_string_equal(id, "");
    }
    /* not an API key: the JWT path decides */
    assert_int_equal(check(v, f, &CFG, "eyJhbGciOiJIUzI1NiJ9.e30.x", &who, id, why), 1);
    assert_int_equal(gw_apikeys_check(v, &f->seg, &CFG, "Basic c2stZ3c=", 14, &who, id, why, 256),
                     1);
    assert_int_equal(gw_apikeys_check(v, &f->seg, &CFG, NULL, 0, &who, id, why, 256), 1);
    /* API keys off */
    struct gw_config off = CFG;
    off.api_keys_file[0] = '\0';
    assert_int_equal(check(v, f, &off, a, &who, id, why), -EACCES);
    assert_string_equal(why, "api keys are not enabled on this node");
    gw_apikeys_drop(v);
    gw_apikeys_free(&set);
    fx_close(f);
}

static void test_front_rereads_the_live_copy_exactly_when_the_generation_moves(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_apikey_set set = {0};
    char a[GW_APIKEY_LEN + 1];
    assert_int_equal(gw_apikeys_add(&set, "happy", "", "", 1700000000, a), 0);
    assert_int_equal(gw_apikeys_write(PATH_, &set, NULL, 0), 0);
    uint64_t g0 = gw_apikey_gen(&f->seg);
    assert_int_equal(gw_apikeys_load_publish(&f->seg, &CFG, NULL, 0), 0);
    assert_int_equal(gw_apikey_gen(&f->seg), g0 + 1);
    char *live = strdup(file_text(LIVE_)); /* the master's copy: the same records */
    assert_string_equal(live, file_text(PATH_));
    free(live);
    struct gw_apikeys *v;
    assert_int_equal(gw_apikeys_new(&v), 0);
    struct gw_principal who;
    char id[16], why[256];
    assert_int_equal(check(v, f, &CFG, a, &who, id, why), 0);
    set.keys[0].revoked_s = 1700000500;
    assert_int_equal(gw_apikeys_write(LIVE_, &set, NULL, 0), 0);
    /* the copy stands until the master says the live file changed */
    assert_int_equal(check(v, f, &CFG, a, &who, id, why), 0);
    gw_apikey_gen_bump(&f->seg);
    assert_int_equal(check(v, f, &CFG, a, &who, id, why), -EACCES);
    assert_string_equal(why, "revoked api key");
    /* a live copy that cannot be read after a change: refused (503), never
     * the old copy */
    put_file(LIVE_, "{\"version\": 1,\n \"keys\": [\n");
    gw_apikey_gen_bump(&f->seg);
    assert_int_equal(check(v, f, &CFG, a, &who, id, why), -EAGAIN);
    char want[1024];
    snprintf(want, sizeof(want), "%s: line 3 column 0: ']' expected near end of file", LIVE_);
    assert_string_equal(why, want);
    set.keys[0].revoked_s = 0;
    assert_int_equal(gw_apikeys_publish(&f->seg, &CFG, &set, NULL, 0), 0);
    assert_int_equal(check(v, f, &CFG, a, &who, id, why), 0);
    /* a malformed keys file is never published: the live copy and the
     * generation stay, and the message names the file and the field */
    put_file(PATH_, "{\"version\": 1, \"keys\": [{\"id\": \"0123456789ab\"}]}");
    uint64_t g1 = gw_apikey_gen(&f->seg);
    char err[1024];
    assert_int_equal(gw_apikeys_load_publish(&f->seg, &CFG, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want),
             "%s: keys[0].sha256: missing (required)\n%s: keys[0].tenant: missing (required)\n"
             "%s: keys[0].created: missing (required)",
             PATH_, PATH_, PATH_);
    assert_string_equal(err, want);
    assert_int_equal(gw_apikey_gen(&f->seg), g1);
    assert_int_equal(check(v, f, &CFG, a, &who, id, why), 0);
    /* another state_dir (a config read afresh) is read without a bump */
    struct gw_config other = CFG;
    snprintf(other.state_dir, sizeof(other.state_dir), "%s/other", DIR_);
    mkdir(other.state_dir, 0700);
    assert_int_equal(check(v, f, &other, a, &who, id, why), -EACCES);
    assert_string_equal(why, "unknown api key");
    gw_apikeys_drop(v);
    gw_apikeys_free(&set);
    fx_close(f);
}

static void test_write_is_atomic_and_reuses_a_stale_temp_file(void **state)
{
    (void)state;
    char tmp[256], err[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp", PATH_);
    put_file(tmp, "half a file a killed master left"); /* as a killed master would */
    put_file(PATH_, "{\"version\": 1, \"keys\": []}\n");
    struct gw_apikey_set set = {0};
    char a[GW_APIKEY_LEN + 1];
    assert_int_equal(gw_apikeys_add(&set, "happy", "open", "x", 1700000000, a), 0);
    assert_int_equal(gw_apikeys_write(PATH_, &set, err, sizeof(err)), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    struct gw_apikey_set back;
    assert_int_equal(gw_apikeys_read(PATH_, &back, err, sizeof(err)), 0);
    assert_int_equal(back.n, 1);
    assert_string_equal(back.keys[0].plan, "open");
    gw_apikeys_free(&back);
    /* a directory that does not exist: the temp file cannot be made, and
     * the message names it */
    char bad[256], want[512];
    snprintf(bad, sizeof(bad), "%s/no-such-dir/k.json", DIR_);
    assert_int_equal(gw_apikeys_write(bad, &set, err, sizeof(err)), -ENOENT);
    snprintf(want, sizeof(want), "%s.tmp: cannot create: No such file or directory", bad);
    assert_string_equal(err, want);
    /* no file yet: no keys; a directory: not a regular file */
    snprintf(bad, sizeof(bad), "%s/none.json", DIR_);
    assert_int_equal(gw_apikeys_read(bad, &back, err, sizeof(err)), 0);
    assert_int_equal(back.n, 0);
    assert_int_equal(gw_apikeys_read(DIR_, &back, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "%s: not a regular file", DIR_);
    assert_string_equal(err, want);
    gw_apikeys_free(&set);
}

static void test_add_refuses_bad_names_and_a_full_file(void **state)
{
    (void)state;
    struct gw_apikey_set set = {0};
    char k[GW_APIKEY_LEN + 1];
    assert_int_equal(gw_apikeys_add(&set, "", "", "", 1, k), -EINVAL);
    assert_int_equal(gw_apikeys_add(&set, "a b", "", "", 1, k), -EINVAL);
    assert_int_equal(gw_apikeys_add(&set, "t", "p@x", "", 1, k), -EINVAL);
    assert_int_equal(gw_apikeys_add(&set, "t", "", "tab\there", 1, k), -EINVAL);
    char longname[80];
    memset(longname, 'n', 65);
    longname[65] = '\0';
    assert_int_equal(gw_apikeys_add(&set, "t", "", longname, 1, k), -EINVAL);
    for (int i = 0; i < GW_APIKEYS_MAX; i++)
        assert_int_equal(gw_apikeys_add(&set, "t", "", "", 1, k), 0);
    assert_int_equal(gw_apikeys_add(&set, "t", "", "", 1, k), GW_EFULL);
    /* every id distinct */
    for (int i = 1; i < set.n; i++)
        assert_null(
            gw_apikeys_find(&(struct gw_apikey_set){.n = i, .keys = set.keys}, set.keys[i].id));
    gw_apikeys_free(&set);
}

#define H64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define REC(id, extra)                                                                             \
    "{\"id\": \"" id "\", \"sha256\": \"" H64 "\", \"tenant\": \"happy\", \"created\": 1" extra "}"

static void test_keys_file_bad_input_has_exact_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"", "line 1 column 0: '[' or '{' expected near end of file"},
        {"{\"version\": 1,\n \"keys\": [\n  {\"id\": }\n]}",
         "line 3 column 10: unexpected token near '}'"},
        {"[]", "expected a JSON object {\"version\": 1, \"keys\": [...]}"},
        {"{\"keys\": []}", "version: missing (required: 1)"},
        {"{\"version\": 2, \"keys\": []}", "version: expected 1"},
        {"{\"version\": 1}", "keys: missing (required: an array of at most 4096 keys)"},
        {"{\"version\": 1, \"keys\": {}}", "keys: expected an array of at most 4096 keys"},
        {"{\"version\": 1, \"keys\": [], \"extra\": 1}",
         "extra: unknown field (expected version, keys)"},
        {"{\"version\": 1, \"keys\": [], \"a\\nb\\\"c\": 1}",
         "a?b?c: unknown field (expected version, keys)"},
        {"{\"version\": 1, \"version\": 1, \"keys\": []}",
         "line 1 column 24: duplicate object key near '\"version\"'"},
        {"{\"version\": 1, \"keys\": [7]}", "keys[0]: expected an object"},
        {"{\"version\": 1, \"keys\": [{}]}",
         "keys[0].id: missing (required)\nX: keys[0].sha256: missing (required)\n"
         "X: keys[0].tenant: missing (required)\nX: keys[0].created: missing (required)"},
        {"{\"version\": 1, \"keys\": [" REC("0123456789AB", "") "]}",
         "keys[0].id: expected 12 lowercase hex digits"},
        {"{\"version\": 1, \"keys\": [{\"id\": \"0123456789ab\", \"sha256\": \"00\", \"tenant\": "
         "\"happy\", \"created\": 1}]}",
         "keys[0].sha256: expected 64 lowercase hex digits (the SHA-256 of the key)"},
        {"{\"version\": 1, \"keys\": [{\"id\": \"0123456789ab\", \"sha256\": \"" H64
         "\", \"tenant\": \"a b\", \"created\": 1}]}",
         "keys[0].tenant: expected 1 to 63 bytes of [A-Za-z0-9._@:-]"},
        {"{\"version\": 1, \"keys\": [" REC("0123456789ab", ", \"plan\": 5") "]}",
         "keys[0].plan: expected null or 1 to 63 bytes of [A-Za-z0-9._-]"},
        {"{\"version\": 1, \"keys\": [" REC("0123456789ab", ", \"name\": \"a\\u0007\"") "]}",
         "keys[0].name: expected a string of 0 to 64 bytes without control characters"},
        {"{\"version\": 1, \"keys\": [{\"id\": \"0123456789ab\", \"sha256\": \"" H64
         "\", \"tenant\": \"happy\", \"created\": -1}]}",
         "keys[0].created: expected Unix seconds (an integer >= 0)"},
        {"{\"version\": 1, \"keys\": [{\"id\": \"0123456789ab\", \"sha256\": \"" H64
         "\", \"tenant\": \"happy\", \"created\": \"now\"}]}",
         "keys[0].created: expected Unix seconds (an integer >= 0)"},
        {"{\"version\": 1, \"keys\": [" REC("0123456789ab", ", \"revoked\": 0") "]}",
         "keys[0].revoked: expected null or Unix seconds (an integer > 0)"},
        {"{\"version\": 1, \"keys\": [" REC("0123456789ab", ", \"secret\": \"x\"") "]}",
         "keys[0].secret: unknown field (expected id, sha256, tenant, plan, name, created, "
         "revoked)"},
        {"{\"version\": 1, \"keys\": [" REC("0123456789ab", "") ", " REC(
             "00000000000a", "") ", " REC("0123456789ab", "") "]}",
         "keys[2].id: \"0123456789ab\" is also the id of keys[0]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_apikey_set set;
        char err[1024], want[1024];
        int rc =
            gw_apikeys_parse(cases[i].text, strlen(cases[i].text), "X", &set, err, sizeof(err));
        snprintf(want, sizeof(want), "X: %s", cases[i].want);
        if (rc != -EINVAL || strcmp(err, want) != 0)
            fail_msg("case %zu: rc %d\n got: %s\nwant: %s", i, rc, err, want);
        assert_int_equal(set.n, 0);
        assert_null(set.keys);
    }
    /* a good file: plan null, name absent, revoked null */
    const char *good = "{\"version\": 1, \"keys\": [" REC("0123456789ab", ", \"plan\": null") "]}";
    struct gw_apikey_set set;
    char err[256];
    assert_int_equal(gw_apikeys_parse(good, strlen(good), "X", &set, err, sizeof(err)), 0);
    assert_int_equal(set.n, 1);
    assert_string_equal(set.keys[0].name, "");
    assert_int_equal(set.keys[0].revoked_s, 0);
    gw_apikeys_free(&set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_created_key_has_its_format_and_the_file_keeps_only_its_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_accepts_and_refuses_with_exact_words, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_front_rereads_the_live_copy_exactly_when_the_generation_moves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_is_atomic_and_reuses_a_stale_temp_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_add_refuses_bad_names_and_a_full_file, setup,
                                        teardown),
        cmocka_unit_test(test_keys_file_bad_input_has_exact_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
