/* test_batching.c - continuous batching end to end (issue 14): a real
 * master, fronts and one worker on SmolLM2 running several requests at once.
 *
 * - Kill one of four running sequences (its client goes away: the cancel
 *   word, as the watchdog's kill): the other three finish with exactly the
 *   text they give alone, and no slot is left in use.
 * - A KV pool that holds one sequence: concurrent requests wait, then run,
 *   each with its solo text.
 * - Held places: a tenant served less than one in a full batch is answered
 *   while the batch's long generations go on.
 * - Fairness (`test_batching fair`, ctest test_batching_fair): two tenants
 *   of equal weight, one with four times the other's clients, both
 *   backlogged: the text streamed to each (counted as it arrives) within
 *   10% of the other's; weights 2:1 give 2:1 (within 10%).
 * Exit 77 without the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "service.h"

static struct svc S;

/* The node: one worker of max_batch sequences, a pool of kv tokens, and
 * plans "a" and "b" of weights wa and wb (tenants ta and tb). */
static void write_config(int max_batch, int context, int kv, double wa, double wb)
{
    svc_write_config(&S, NULL); /* directory, key, socket, then our own config */
    char secret_path[256];
    snprintf(secret_path, sizeof(secret_path), "%s/secret.key", S.dir);
    FILE *f = fopen(S.config, "w");
    fprintf(
        f,
        "{\"listen\": [\"127.0.0.1:%d\"], \"fronts\": 2, \"workers\": 1,\n"
        " \"state_dir\": \"%s/state\",\n"
        " \"segment\": {\"accounts\": 1024, \"budgets\": 64, \"slots\": 32, \"queue\": 32,\n"
        "   \"prompt_bytes\": 4096, \"output_bytes\": 8192},\n"
        " \"model\": {\"path\": \"%s\", \"name\": \"smollm2\", \"device\": \"cpu\",\n"
        "   \"threads\": 2, \"context\": %d, \"max_batch\": %d, \"kv_cache_tokens\": %d,\n"
        "   \"prefill_chunk\": 16, \"step_tokens\": 64},\n"
        " \"auth\": {\"keys\": [{\"kid\": \"test\", \"alg\": \"HS256\", \"secret_file\": "
        "\"%s\"}],\n"
        "   \"issuer\": \"gw-test\", \"audience\": \"gpuwarden\", \"leeway_s\": 5},\n"
        " \"ip\": {\"rate\": [\"1000 per second burst 100\"]},\n"
        " \"global\": {\"rate\": [\"1000 per second burst 100\"],\n"
        "   \"budget\": \"1000 GPU-seconds per second\"},\n"
        " \"plans\": {\n"
        "   \"a\": {\"rate\": [\"1000 per second burst 100\"], \"budget\": \"1000 GPU-seconds "
        "per second\", \"max_inflight\": 32, \"max_tokens\": 256, \"weight\": %g},\n"
        "   \"b\": {\"rate\": [\"1000 per second burst 100\"], \"budget\": \"1000 GPU-seconds "
        "per second\", \"max_inflight\": 32, \"max_tokens\": 256, \"weight\": %g}},\n"
        " \"default_plan\": null,\n"
        " \"tenants\": {\"ta\": {\"plan\": \"a\"}, \"tb\": {\"plan\": \"b\"}},\n"
        " \"watchdog\": {\"repetition\": {\"min_tokens\": 100000, \"min_match\": 0},\n"
        "   \"near_repetition\": {\"min_match\": 0}, \"divergence\": {\"min_tokens\": 100000}},\n"
        " \"cost\": {\"initial_us_per_token\": 2000}}\n",
        S.port, S.dir, svc_model_path(), context, max_batch, kv, secret_path, wa, wb);
    fclose(f);
}

/* A greedy completion: the text (malloc'd) and the completion tokens. */
static char *complete(const char *tenant, const char *prompt, int max_tokens, long *tokens)
{
    char *tok = svc_token(&S, tenant, 600), body[1024];
    snprintf(body, sizeof(body),
             "{\"model\":\"smollm2\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0}",
             prompt, max_tokens);
    struct resp r;
    char *text = NULL;
    if (svc_http(&S, "POST", "/v1/completions", tok, body, &r) == 0 && r.status == 200) {
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        json_t *t = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text");
        if (json_is_string(t))
            text = strdup(json_string_value(t));
        if (tokens)
            *tokens = (long)json_integer_value(
                json_object_get(json_object_get(j, "usage"), "completion_tokens"));
        json_decref(j);
    } else {
        print_message("%s: status %d: %.*s\n", prompt, r.status, (int)(r.len > 300 ? 300 : r.len),
                      r.body ? r.body : "");
    }
    if (r.status)
        resp_free(&r);
    free(tok);
    return text;
}

static const char *const prompts[] = {
    "The capital of France is",
    "Once upon a time, in a small village,",
    "Here is a list of fruits: apple,",
    "def fibonacci(n):",
};

/* Each prompt's completion in a child process at once; texts via pipes. */
static void run_concurrently(int n, int max_tokens, char **out)
{
    int fds[8][2];
    pid_t pids[8];
    for (int i = 0; i < n; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        pids[i] = fork();
        if (pids[i] == 0) {
            char *t = complete("ta", prompts[i], max_tokens, NULL);
            if (t && write(fds[i][1], t, strlen(t)) < 0)
                _exit(2);
            _exit(t ? 0 : 1);
        }
        close(fds[i][1]);
    }
    for (int i = 0; i < n; i++) {
        char buf[8192];
        size_t len = 0;
        ssize_t k;
        while ((k = read(fds[i][0], buf + len, sizeof(buf) - 1 - len)) > 0)
            len += (size_t)k;
        buf[len] = '\0';
        close(fds[i][0]);
        int st;
        waitpid(pids[i], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        out[i] = strdup(buf);
    }
}

/* Opens a streaming completion and returns its socket once text flows. */
static int open_stream(int max_tokens)
{
    char *tok = svc_token(&S, "tb", 600);
    int fd = svc_connect(&S);
    char body[256], head[4096], first[512];
    snprintf(
        body, sizeof(body),
        "{\"model\":\"smollm2\",\"prompt\":\"Write a long essay about the sea.\",\"max_tokens\":%d,"
        "\"temperature\":0,\"stream\":true}",
        max_tokens);
    int n = snprintf(head, sizeof(head),
                     "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     tok, strlen(body), body);
    send_all(fd, head, (size_t)n);
    free(tok);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, SVC_DEADLINE_MS), 1);
    assert_true(recv(fd, first, sizeof(first), 0) > 0);
    return fd;
}

static void test_kill_one_of_four(void **state)
{
    (void)state;
    write_config(4, 512, 0, 1, 1);
    assert_int_equal(svc_start(&S), 0);
    char *solo[3], *got[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(solo[i] = complete("ta", prompts[i], 40, NULL));
    /* the victim streams; the three others join it; then its client goes */
    int victim = open_stream(200);
    pid_t killer = fork();
    if (killer == 0) {
        usleep(1500000); /* the three are running beside it by now */
        close(victim);
        _exit(0);
    }
    close(victim); /* the child holds the connection now */
    run_concurrently(3, 40, got);
    waitpid(killer, NULL, 0);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(got[i], solo[i]);
        free(got[i]);
        free(solo[i]);
    }
    assert_int_equal(svc_wait_slots_free(&S), 0);
    assert_int_equal(svc_stop(&S), 0);
}

static void test_kv_pool_waits(void **state)
{
    (void)state;
    /* each request needs the whole pool: they take turns */
    write_config(4, 128, 128, 1, 1);
    assert_int_equal(svc_start(&S), 0);
    char *solo[4], *got[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(solo[i] = complete("ta", prompts[i], 100, NULL));
    run_concurrently(4, 100, got);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(got[i], solo[i]);
        free(got[i]);
        free(solo[i]);
    }
    char *log = svc_log_text(&S);
    assert_non_null(strstr(log, "batch: 4 sequences, KV cache 128 tokens"));
    free(log);
    assert_int_equal(svc_wait_slots_free(&S), 0);
    assert_int_equal(svc_stop(&S), 0);
}

/* A streaming response being read: what came so far. */
struct stream {
    int fd;
    char *buf; /* 1 MiB, NUL-terminated */
    size_t len;
};

/* Reads one more piece of st (0), or -1 at its end or after the deadline. */
static int stream_more(struct stream *st)
{
    struct pollfd p = {.fd = st->fd, .events = POLLIN};
    if (poll(&p, 1, SVC_DEADLINE_MS) != 1)
        return -1;
    ssize_t got = recv(st->fd, st->buf + st->len, (1 << 20) - 1 - st->len, 0);
    if (got <= 0)
        return -1;
    st->len += (size_t)got;
    st->buf[st->len] = '\0';
    return 0;
}

/* Reads st until its first text event came (generation is under way in a
 * worker, not just admitted: the headers come before any token). */
static void stream_wait_text(struct stream *st)
{
    while (!strstr(st->buf, "\"text\":\"") || strstr(st->buf, "\"text\":\"\""))
        assert_int_equal(stream_more(st), 0);
}

/* The text a stream carried: the "text" of every data event, in order.
 * Reads st to its end and closes it. */
static char *stream_text(struct stream *st)
{
    char *out = calloc(1, 1 << 16);
    size_t olen = 0;
    while (!strstr(st->buf, "data: [DONE]") && stream_more(st) == 0)
        ;
    close(st->fd);
    for (char *d = strstr(st->buf, "data: {"); d; d = strstr(d + 1, "data: {")) {
        char *end = strstr(d, "\n");
        json_t *j = json_loadb(d + 6, end ? (size_t)(end - d - 6) : strlen(d + 6), 0, NULL);
        json_t *t = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text");
        if (json_is_string(t)) {
            size_t n = strlen(json_string_value(t));
            memcpy(out + olen, json_string_value(t), n);
            olen += n;
        }
        json_decref(j);
    }
    free(st->buf);
    return out;
}

/* Opens a greedy stream of prompt for tenant. */
static struct stream stream_for(const char *tenant, const char *prompt, int max_tokens)
{
    char *tok = svc_token(&S, tenant, 600);
    int fd = svc_connect(&S);
    char body[512], head[4096];
    snprintf(body, sizeof(body),
             "{\"model\":\"smollm2\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,"
             "\"stream\":true}",
             prompt, max_tokens);
    int n = snprintf(head, sizeof(head),
                     "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     tok, strlen(body), body);
    send_all(fd, head, (size_t)n);
    free(tok);
    struct stream st = {.fd = fd, .buf = calloc(1, 1 << 20)};
    assert_non_null(st.buf);
    return st;
}

/* Opens a stream of prompt i for tenant ta. */
static struct stream stream_of(int i, int max_tokens)
{
    return stream_for("ta", prompts[i], max_tokens);
}

/* Conservation over the node's segment: reserved = used + refunded + held. */
static void check_ledger(void)
{
    char path[300], err[512];
    snprintf(path, sizeof(path), "%s/state/ledger", S.dir);
    struct gw_segment seg;
    assert_int_equal(gw_segment_attach(&seg, path, err, sizeof(err)), 0);
    int bad = gw_ledger_check(&seg, err, sizeof(err));
    if (bad)
        fail_msg("ledger: %s", err);
    gw_segment_close(&seg);
}

/* Four greedy streams; the worker is SIGKILLed while they run (after
 * `victim` lost its client, the worker stopped first so the cancel word is
 * all it left: the culprit, or -1 for a plain crash). The others continue
 * on the restarted worker: each stream's text equals its solo text, with no
 * gap and no repeat. */
static void crash_under_streams(int victim)
{
    char *solo[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(solo[i] = complete("ta", prompts[i], 160, NULL));
    pid_t w = svc_worker_pid(&S);
    assert_true(w > 0);
    struct stream st[4];
    for (int i = 0; i < 4; i++)
        st[i] = stream_of(i, 160);
    for (int i = 0; i < 4; i++)
        stream_wait_text(&st[i]); /* all four in the batch, some text out */
    if (victim >= 0) {
        assert_int_equal(kill(w, SIGSTOP), 0);
        close(st[victim].fd); /* its front sets the cancel word */
        free(st[victim].buf);
        usleep(300000);
    }
    assert_int_equal(kill(w, SIGKILL), 0);
    for (int i = 0; i < 4; i++) {
        if (i == victim)
            continue;
        char *t = stream_text(&st[i]);
        assert_string_equal(t, solo[i]);
        free(t);
    }
    for (int i = 0; i < 4; i++)
        free(solo[i]);
    assert_int_equal(svc_wait_slots_free(&S), 0);
    check_ledger();
    char *log = svc_log_text(&S);
    assert_non_null(
        strstr(log, victim >= 0 ? "3 put back to be continued" : "4 put back to be continued"));
    assert_non_null(strstr(log, "continuing after its worker died"));
    free(log);
}

/* How many requests workers continued so far (their log lines). */
static int continued(void)
{
    char *log = svc_log_text(&S);
    int n = 0;
    for (char *p = strstr(log, "continuing after its worker died"); p;
         p = strstr(p + 1, "continuing after its worker died"))
        n++;
    free(log);
    return n;
}

static void test_worker_killed_requests_continue(void **state)
{
    (void)state;
    write_config(4, 512, 0, 1, 1);
    assert_int_equal(svc_start(&S), 0);
    crash_under_streams(-1);
    crash_under_streams(1);
    /* a request present in two crashes is failed: worker_lost */
    struct stream st = stream_of(0, 250);
    stream_wait_text(&st); /* text flows: kill its worker */
    pid_t w = svc_worker_pid(&S);
    assert_int_equal(kill(w, SIGKILL), 0);
    pid_t w2 = -1;
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS;
         (w2 = svc_worker_pid(&S)) <= 0 || w2 == w;) {
        assert_true(svc_now_ms() < end);
        usleep(5000);
    }
    /* continued on the new worker (its log says so): kill it too */
    for (uint64_t end = svc_now_ms() + SVC_DEADLINE_MS; continued() < 8; usleep(5000))
        assert_true(svc_now_ms() < end);
    assert_int_equal(kill(w2, SIGKILL), 0);
    while (!strstr(st.buf, "data: [DONE]") && stream_more(&st) == 0)
        ;
    close(st.fd);
    if (!strstr(st.buf, "\"killed_reason\":\"worker_lost\""))
        fail_msg("no worker_lost in the stream:\n%s", st.buf);
    free(st.buf);
    assert_int_equal(svc_wait_slots_free(&S), 0);
    check_ledger();
    assert_int_equal(svc_stop(&S), 0);
}

/* Reads what st has now, without waiting; 1 once its end came. */
static int stream_done_now(struct stream *st)
{
    ssize_t got;
    while ((got = recv(st->fd, st->buf + st->len, (1 << 20) - 1 - st->len, MSG_DONTWAIT)) > 0) {
        st->len += (size_t)got;
        st->buf[st->len] = '\0';
    }
    return strstr(st->buf, "data: [DONE]") != NULL;
}

static const char count_prompt[] = "Count from one to one thousand: one, two,";

/* Tenant ta's two long generations fill a batch of two; tenant tb, served
 * less, takes a held place and is answered while both still run (without
 * held places it would wait for one of them to end); ta's texts are the
 * ones they give alone. */
static void test_newcomer_does_not_wait_for_the_batch(void **state)
{
    (void)state;
    write_config(2, 512, 0, 1, 1);
    assert_int_equal(svc_start(&S), 0);
    char *solo = complete("ta", count_prompt, 250, NULL);
    assert_non_null(solo);
    struct stream st[2];
    for (int i = 0; i < 2; i++)
        st[i] = stream_for("ta", count_prompt, 250);
    for (int i = 0; i < 2; i++)
        stream_wait_text(&st[i]);
    long toks = 0;
    char *t = complete("tb", "The capital of France is", 4, &toks);
    assert_non_null(t);
    assert_int_equal(toks, 4);
    for (int i = 0; i < 2; i++)
        assert_false(stream_done_now(&st[i]));
    for (int i = 0; i < 2; i++) {
        char *got = stream_text(&st[i]);
        assert_string_equal(got, solo);
        free(got);
    }
    free(t);
    free(solo);
    char *log = svc_log_text(&S);
    assert_non_null(strstr(log, "batch: 2 sequences, KV cache 1536 tokens, steps of 64 tokens, "
                                "1 held places"));
    free(log);
    assert_int_equal(svc_wait_slots_free(&S), 0);
    check_ledger();
    assert_int_equal(svc_stop(&S), 0);
}

/* The text bytes in the complete SSE events of buf[*at, len) that arrive
 * inside [from, until); *at moves past the events counted. */
static long text_in_window(const char *buf, size_t *at, uint64_t from, uint64_t until)
{
    long bytes = 0;
    const char *ev, *end;
    while ((ev = strstr(buf + *at, "data: {")) && (end = strstr(ev, "\n\n"))) {
        json_t *j = json_loadb(ev + 6, (size_t)(end - ev - 6), 0, NULL);
        json_t *t = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text");
        uint64_t now = svc_now_ms();
        if (json_is_string(t) && now >= from && now < until)
            bytes += (long)json_string_length(t);
        json_decref(j);
        *at = (size_t)(end + 2 - buf);
    }
    return bytes;
}

/* One streamed greedy completion for tenant; the text bytes that arrived
 * inside [from, until). Counting bytes as they stream (not whole requests
 * at their end) gives the fairness check a fine grain even when the build
 * is slow (sanitizers), and both tenants stream the same text. */
static long stream_in_window(const char *tenant, uint64_t from, uint64_t until)
{
    char *tok = svc_token(&S, tenant, 600);
    int fd = svc_connect(&S);
    static const char body[] = "{\"model\":\"smollm2\",\"prompt\":\"Count from one to one "
                               "thousand: one, two,\",\"max_tokens\":16,\"temperature\":0,"
                               "\"stream\":true}";
    char head[2048];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     tok, strlen(body), body);
    free(tok);
    send_all(fd, head, (size_t)n);
    static char buf[65536];
    size_t len = 0, at = 0;
    long bytes = 0;
    ssize_t got;
    while (len < sizeof(buf) - 1 && (got = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0) {
        len += (size_t)got;
        buf[len] = '\0';
        bytes += text_in_window(buf, &at, from, until);
        if (strstr(buf + (at > 16 ? at - 16 : 0), "data: [DONE]"))
            break;
    }
    close(fd);
    return bytes;
}

/* Closed-loop streaming clients of a tenant until the deadline; each adds
 * the text bytes it received inside [from, until) to the pipe. */
static pid_t client(const char *tenant, uint64_t from, uint64_t until, int fd)
{
    pid_t p = fork();
    if (p != 0)
        return p;
    long sum = 0;
    while (svc_now_ms() < until)
        sum += stream_in_window(tenant, from, until);
    if (write(fd, &sum, sizeof(sum)) != sizeof(sum))
        _exit(1);
    _exit(0);
}

/* The sum of what the clients wrote into fd's pipe, once they exited. */
static long sum_of(int fd, int n)
{
    long total = 0, v;
    int k = 0;
    while (k < n && read(fd, &v, sizeof(v)) == sizeof(v)) {
        total += v;
        k++;
    }
    assert_int_equal(k, n);
    close(fd);
    return total;
}

/* The measuring window: a few thousand bytes of text at the optimized
 * build's speed (the fairness group is labelled slow: it runs in the gcc
 * pass, not under the sanitizers, whose model runs several times slower). */
#define FAIR_WINDOW_MS 15000

/* Text bytes served to ta (n_a clients) and tb (n_b clients) in a window
 * that starts once both are backlogged. */
static void served(int n_a, int n_b, long *a, long *b)
{
    int pa[2], pb[2];
    assert_int_equal(pipe(pa), 0);
    assert_int_equal(pipe(pb), 0);
    uint64_t from = svc_now_ms() + 3000, until = from + FAIR_WINDOW_MS;
    pid_t pids[32];
    int n = 0;
    for (int i = 0; i < n_a; i++)
        pids[n++] = client("ta", from, until, pa[1]);
    for (int i = 0; i < n_b; i++)
        pids[n++] = client("tb", from, until, pb[1]);
    close(pa[1]);
    close(pb[1]);
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    *a = sum_of(pa[0], n_a);
    *b = sum_of(pb[0], n_b);
}

/* ta sends with four times tb's clients (tb has twice the batch's places,
 * so it is backlogged too); what each is served depends on the weights
 * only. */
static void check_fair(double wa, double wb)
{
    write_config(2, 256, 0, wa, wb);
    assert_int_equal(svc_start(&S), 0);
    long a, b;
    served(16, 4, &a, &b);
    double want = wa / wb, got = (double)a / (double)b;
    print_message("weights %g:%g: ta %ld bytes, tb %ld bytes (ratio %.3f, want %.3f)\n", wa, wb, a,
                  b, got, want);
    assert_true(a > 0 && b > 0);
    assert_true(got >= want * 0.9 && got <= want * 1.1);
    assert_int_equal(svc_wait_slots_free(&S), 0);
    assert_int_equal(svc_stop(&S), 0);
}

static void test_fair_by_tenant(void **state)
{
    (void)state;
    check_fair(1, 1);
    check_fair(2, 1);
}

/* `test_batching` runs the functional group; `test_batching fair` runs the
 * fairness measurement (ctest: test_batching_fair, label slow). */
int main(int argc, char **argv)
{
    svc_model_path(); /* exit 77 without the model */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_one_of_four),
        cmocka_unit_test(test_kv_pool_waits),
        cmocka_unit_test(test_worker_killed_requests_continue),
        cmocka_unit_test(test_newcomer_does_not_wait_for_the_batch),
    };
    const struct CMUnitTest fair[] = {
        cmocka_unit_test(test_fair_by_tenant),
    };
    if (argc > 1 && strcmp(argv[1], "fair") == 0)
        return cmocka_run_group_tests(fair, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
