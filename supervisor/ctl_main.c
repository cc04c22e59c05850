/* gpuwardenctl - steer a running gpuwarden through its admin socket.
 *
 * Turns a command line into one JSON request line, sends it, reads one
 * response line and prints it: as a table or key/value lines by default,
 * as the daemon's JSON with --json. Exit status (s6 style):
 *   0   done
 *   1   the daemon refused (not found, forbidden, reload refused, ...)
 *   100 misuse: bad command line, or a request the daemon calls malformed
 *   111 the daemon cannot be reached (no socket, no answer)
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define EXIT_REFUSED 1
#define EXIT_MISUSE 100
#define EXIT_TEMP 111
#define DEFAULT_SOCKET "/run/gpuwarden/admin.sock"
#define REPLY_TIMEOUT_MS 60000

static void usage(FILE *to); /* from the command table below */

static int misuse(const char *fmt, const char *arg)
{
    fprintf(stderr, "gpuwardenctl: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fputc('\n', stderr);
    usage(stderr);
    return EXIT_MISUSE;
}

/* "90", "90s", "10m", "2h", "7d" into seconds; -1 when not a duration. */
static long long duration_s(const char *s)
{
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || n <= 0 || s[0] == '-' || s[0] == '+')
        return -1;
    long long mul = 1;
    if (*end == 'm')
        mul = 60;
    else if (*end == 'h')
        mul = 3600;
    else if (*end == 'd')
        mul = 86400;
    else if (*end != 's' && *end != '\0')
        return -1;
    if (*end && end[1])
        return -1;
    if (n > 366LL * 86400 / mul)
        return -1;
    return n * mul;
}

static int uint_arg(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || *end || n < 0 || s[0] == '+')
        return -1;
    *out = n;
    return 0;
}

/* ------------------------------------------------------------ the commands */

/* Each builder gets argv from the command on (argv[0] is its name) and
 * returns the request, or NULL after printing misuse. */

static json_t *build_plain(int argc, char **argv)
{
    if (argc != 1) {
        misuse("%s takes no arguments", argv[0]);
        return NULL;
    }
    return json_pack("{s:s}", "cmd", argv[0]);
}

static json_t *build_kill(int argc, char **argv)
{
    if (argc < 2) {
        misuse("kill: which request? (an id from gpuwardenctl requests)", NULL);
        return NULL;
    }
    json_t *r = json_pack("{s:s,s:s}", "cmd", "kill", "id", argv[1]);
    if (argc > 2) {
        char reason[512] = "";
        for (int i = 2; i < argc; i++) {
            size_t l = strlen(reason);
            snprintf(reason + l, sizeof(reason) - l, "%s%s", i > 2 ? " " : "", argv[i]);
        }
        json_object_set_new(r, "reason", json_string(reason));
    }
    return r;
}

static json_t *build_drain(int argc, char **argv)
{
    long long w;
    if (argc != 2 || uint_arg(argv[1], &w) != 0) {
        misuse("%s: expected one worker index (0, 1, ...)", argv[0]);
        return NULL;
    }
    return json_pack("{s:s,s:I}", "cmd", argv[0], "worker", (json_int_t)w);
}

/* top [N] [--by KEY]: tenant.top, every tenant the segment knows (listed
 * in the config or not), the daemon's order (prompt-farming score by
 * default), the first N rows (all: 0). */
static json_t *build_top(int argc, char **argv)
{
    long long n = 0;
    const char *by = NULL;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--by") && i + 1 < argc)
            by = argv[++i];
        else if (n == 0 && uint_arg(argv[i], &n) == 0)
            continue;
        else
            bad = 1;
    }
    if (bad) {
        misuse("top: expected [N] [--by score|gpu_time|output_tokens|kills|refusals]", NULL);
        return NULL;
    }
    json_t *r = json_pack("{s:s,s:I}", "cmd", "tenant.top", "limit", (json_int_t)n);
    if (r && by)
        json_object_set_new(r, "by", json_string(by));
    return r;
}

/* ban and unban */
static json_t *build_ban(int argc, char **argv)
{
    const char *cmd = argv[0];
    int ban = !strcmp(cmd, "ban");
    if (argc < 3 ||
        (strcmp(argv[1], "tenant") && strcmp(argv[1], "ip") && strcmp(argv[1], "cidr"))) {
        misuse("%s: expected tenant|ip|cidr ID", cmd);
        return NULL;
    }
    json_t *r = json_pack("{s:s,s:s,s:s}", "cmd", cmd, "kind", argv[1], "id", argv[2]);
    if (ban) {
        long long ttl;
        if (argc != 5 || strcmp(argv[3], "--ttl") || (ttl = duration_s(argv[4])) < 0) {
            json_decref(r);
            misuse("ban: expected --ttl DURATION (N[s|m|h|d], at most 366d)", NULL);
            return NULL;
        }
        json_object_set_new(r, "ttl_s", json_integer(ttl));
    } else if (argc != 3) {
        json_decref(r);
        misuse("unban: expected tenant|ip|cidr ID", NULL);
        return NULL;
    }
    return r;
}

/* ip show ADDRESS, ip clear-farming ADDRESS */
static json_t *build_ip(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if ((!strcmp(sub, "show") || !strcmp(sub, "clear-farming")) && argc == 3) {
        char c[32];
        snprintf(c, sizeof(c), "ip.%s", sub);
        return json_pack("{s:s,s:s}", "cmd", c, "id", argv[2]);
    }
    misuse("ip: expected show ADDRESS or clear-farming ADDRESS", NULL);
    return NULL;
}

/* allow RANGE --ttl DURATION, unallow RANGE, net list */
static json_t *build_allow(int argc, char **argv)
{
    long long ttl = 0;
    if (!strcmp(argv[0], "allow") &&
        (argc != 4 || strcmp(argv[2], "--ttl") || (ttl = duration_s(argv[3])) < 0)) {
        misuse("allow: expected RANGE --ttl DURATION (N[s|m|h|d], at most 366d)", NULL);
        return NULL;
    }
    if (!strcmp(argv[0], "unallow") && argc != 2) {
        misuse("unallow: expected RANGE", NULL);
        return NULL;
    }
    json_t *r = json_pack("{s:s,s:s}", "cmd", argv[0], "id", argv[1]);
    if (ttl)
        json_object_set_new(r, "ttl_s", json_integer(ttl));
    return r;
}

static json_t *build_net(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "list")) {
        misuse("net: expected list", NULL);
        return NULL;
    }
    return json_pack("{s:s}", "cmd", "net.list");
}

/* tenant set-limit TENANT [--rate R]... [--budget B] [--max-inflight N]
 * [--max-tokens N] */
static json_t *build_tenant_set_limit(int argc, char **argv)
{
    json_t *r = json_pack("{s:s,s:s}", "cmd", "tenant.set-limit", "tenant", argv[2]);
    json_t *rates = NULL;
    for (int i = 3; i < argc; i += 2) {
        long long n;
        if (i + 1 >= argc) {
            json_decref(r);
            json_decref(rates);
            misuse("tenant set-limit: %s needs a value", argv[i]);
            return NULL;
        }
        if (!strcmp(argv[i], "--rate")) {
            if (!rates)
                rates = json_array();
            json_array_append_new(rates, json_string(argv[i + 1]));
        } else if (!strcmp(argv[i], "--budget")) {
            json_object_set_new(r, "budget", json_string(argv[i + 1]));
        } else if ((!strcmp(argv[i], "--max-inflight") || !strcmp(argv[i], "--max-tokens")) &&
                   uint_arg(argv[i + 1], &n) == 0) {
            json_object_set_new(r, argv[i][6] == 'i' ? "max_inflight" : "max_tokens",
                                json_integer(n));
        } else {
            json_decref(r);
            json_decref(rates);
            misuse("tenant set-limit: bad option %s", argv[i]);
            return NULL;
        }
    }
    if (rates)
        json_object_set_new(r, "rate", rates);
    return r;
}

static json_t *build_tenant(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(sub, "list") && argc == 2)
        return json_pack("{s:s}", "cmd", "tenant.list");
    if ((!strcmp(sub, "show") || !strcmp(sub, "reset-budget") || !strcmp(sub, "clear-farming")) &&
        argc == 3) {
        char c[32];
        snprintf(c, sizeof(c), "tenant.%s", sub);
        return json_pack("{s:s,s:s}", "cmd", c, "tenant", argv[2]);
    }
    if (!strcmp(sub, "set-limit") && argc >= 3)
        return build_tenant_set_limit(argc, argv);
    misuse("tenant: expected list, show T, set-limit T ..., reset-budget T or clear-farming T",
           NULL);
    return NULL;
}

static json_t *build_token(int argc, char **argv)
{
    long long exp;
    if (argc >= 2 && !strcmp(argv[1], "revoke")) {
        if (argc != 6 || strcmp(argv[2], "--jti") || strcmp(argv[4], "--exp") ||
            uint_arg(argv[5], &exp) != 0) {
            misuse("token revoke: expected --jti ID --exp UNIX_SECONDS (the token's exp)", NULL);
            return NULL;
        }
        return json_pack("{s:s,s:s,s:I}", "cmd", "token.revoke", "jti", argv[3], "exp",
                         (json_int_t)exp);
    }
    if (argc < 2 || strcmp(argv[1], "issue")) {
        misuse("token: expected issue --tenant T --ttl DURATION, or revoke --jti ID --exp T", NULL);
        return NULL;
    }
    json_t *r = json_pack("{s:s}", "cmd", "token.issue");
    for (int i = 2; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long ttl;
        if (v && !strcmp(argv[i], "--tenant"))
            json_object_set_new(r, "tenant", json_string(v));
        else if (v && !strcmp(argv[i], "--plan"))
            json_object_set_new(r, "plan", json_string(v));
        else if (v && !strcmp(argv[i], "--kid"))
            json_object_set_new(r, "kid", json_string(v));
        else if (v && !strcmp(argv[i], "--ttl") && (ttl = duration_s(v)) > 0)
            json_object_set_new(r, "ttl_s", json_integer(ttl));
        else {
            json_decref(r);
            misuse("token issue: bad option %s", argv[i]);
            return NULL;
        }
    }
    if (!json_object_get(r, "tenant") || !json_object_get(r, "ttl_s")) {
        json_decref(r);
        misuse("token issue: --tenant and --ttl are required", NULL);
        return NULL;
    }
    return r;
}

/* apikey create TENANT [--plan P] [--name N] | list | revoke ID */
static json_t *build_apikey(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(sub, "list") && argc == 2)
        return json_pack("{s:s}", "cmd", "apikey.list");
    if (!strcmp(sub, "revoke") && argc == 3)
        return json_pack("{s:s,s:s}", "cmd", "apikey.revoke", "id", argv[2]);
    if (strcmp(sub, "create") != 0 || argc < 3 || argv[2][0] == '-') {
        misuse("apikey: expected create TENANT [--plan P] [--name N], list, or revoke ID", NULL);
        return NULL;
    }
    json_t *r = json_pack("{s:s,s:s}", "cmd", "apikey.create", "tenant", argv[2]);
    for (int i = 3; i < argc; i += 2) {
        if (i + 1 < argc && (!strcmp(argv[i], "--plan") || !strcmp(argv[i], "--name"))) {
            json_object_set_new(r, argv[i] + 2, json_string(argv[i + 1]));
        } else {
            json_decref(r);
            misuse("apikey create: bad option %s (expected --plan P or --name N)", argv[i]);
            return NULL;
        }
    }
    return r;
}

/* The command line's commands, in the order of the usage text, as
 * admin_cmds.c lists the daemon's: name, builder, and its lines of the
 * usage text (NULL: it shares the line before). */
static const struct command {
    const char *name;
    json_t *(*build)(int argc, char **argv);
    const char *help;
} COMMANDS[] = {
    {"status", build_plain,
     "  status                         version, uptime, config epoch, workers, queue, totals\n"},
    {"workers", build_plain,
     "  workers                        pid, device, state, current request, tokens/s, restarts\n"},
    {"requests", build_plain, "  requests                       requests in flight\n"},
    {"kill", build_kill,
     "  kill ID [REASON...]            stop request ID (its client gets finish_reason killed)\n"},
    {"tenant", build_tenant,
     "  tenant list\n"
     "  tenant show TENANT             limits, quota left per window, budget, in flight\n"
     "  tenant set-limit TENANT [--rate \"N per P [burst M]\"]... [--budget \"X GPU-seconds "
     "per P\"]\n"
     "                  [--max-inflight N] [--max-tokens N]   (until the next reload)\n"
     "  tenant reset-budget TENANT     give the tenant its whole budget back\n"
     "  tenant clear-farming TENANT    take the tenant off the prompt-farming ladder\n"},
    {"top", build_top,
     "  top [N] [--by score|gpu_time|output_tokens|kills|refusals]\n"
     "                                 every tenant the ledger knows: farming score, admitted,\n"
     "                                 refused, kills, output tokens, GPU time\n"},
    {"ban", build_ban,
     "  ban tenant|ip|cidr ID --ttl DURATION   (cidr: a range, e.g. 203.0.113.0/24)\n"},
    {"unban", build_ban, "  unban tenant|ip|cidr ID\n"},
    {"ip", build_ip,
     "  ip show ADDRESS                the address's prompt-farming state and ban\n"
     "  ip clear-farming ADDRESS       take the address off the prompt-farming ladder\n"},
    {"allow", build_allow,
     "  allow RANGE --ttl DURATION     exempt a range from bans and per-address limits\n"},
    {"unallow", build_allow, "  unallow RANGE\n"},
    {"net", build_net, "  net list                       address-range bans and allow entries\n"},
    {"drain", build_drain,
     "  drain WORKER | undrain WORKER  stop / resume taking new requests on a worker\n"},
    {"undrain", build_drain, NULL},
    {"reload", build_plain,
     "  reload                         re-read the config; fails when it is refused\n"},
    {"token", build_token,
     "  token issue --tenant T --ttl DURATION [--plan P] [--kid K]\n"
     "  token revoke --jti ID --exp UNIX_SECONDS   refused until the token's exp\n"},
    {"cluster", build_plain,
     "  cluster                        the farm: Redis state, live nodes by name, leases, "
     "counters\n"},
    {"apikey", build_apikey,
     "  apikey create TENANT [--plan P] [--name N]   prints the new key, this once\n"
     "  apikey list                    ids, tenants, plans, names, created, revoked\n"
     "  apikey revoke ID               refused by every front from its next request\n"},
};

static void usage(FILE *to)
{
    fputs("usage: gpuwardenctl [-s SOCKET | -c CONFIG] [--json] COMMAND [ARGS]\n"
          "commands:\n",
          to);
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++)
        if (COMMANDS[i].help)
            fputs(COMMANDS[i].help, to);
    fputs("DURATION: N[s|m|h|d]. SOCKET: -s, else $GPUWARDEN_ADMIN_SOCKET, else admin.socket of\n"
          "-c CONFIG, else " DEFAULT_SOCKET ".\n"
          "exit: 0 ok, 1 refused by the daemon, 100 misuse, 111 daemon unreachable\n",
          to);
}

/* The request for argv (command onwards); NULL after printing misuse. */
static json_t *build(int argc, char **argv, int *rc)
{
    *rc = EXIT_MISUSE;
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++)
        if (!strcmp(argv[0], COMMANDS[i].name))
            return COMMANDS[i].build(argc, argv);
    misuse("unknown command \"%s\"", argv[0]);
    return NULL;
}

/* Sends the line and reads one line back. 0, or EXIT_TEMP after saying why. */
static int exchange(const char *path, const char *line, char **reply)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "gpuwardenctl: %s: path too long for a Unix socket\n", path);
        return EXIT_MISUSE;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "gpuwardenctl: cannot reach gpuwarden at %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return EXIT_TEMP;
    }
    size_t n = strlen(line), off = 0;
    while (off < n) {
        ssize_t w = send(fd, line + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "gpuwardenctl: %s: send: %s\n", path, strerror(errno));
            close(fd);
            return EXIT_TEMP;
        }
        off += (size_t)w;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, REPLY_TIMEOUT_MS);
        if (r == 0) {
            fprintf(stderr, "gpuwardenctl: %s: no answer within %d s\n", path,
                    REPLY_TIMEOUT_MS / 1000);
            break;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                break;
            buf = nb;
        }
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
        buf[len] = '\0';
        char *nl = memchr(buf, '\n', len);
        if (nl) {
            *nl = '\0';
            close(fd);
            *reply = buf;
            return 0;
        }
    }
    if (len == 0)
        fprintf(stderr, "gpuwardenctl: %s: the daemon closed the connection without an answer\n",
                path);
    close(fd);
    free(buf);
    return EXIT_TEMP;
}

/* ------------------------------------------------------------ human output */

static void print_scalar(const char *key, json_t *v, int indent)
{
    if (json_is_object(v)) {
        printf("%*s%s:\n", indent, "", key);
        const char *k;
        json_t *x;
        json_object_foreach (v, k, x) {
            print_scalar(k, x, indent + 2);
        }
        return;
    }
    if (json_is_array(v)) {
        printf("%*s%s:\n", indent, "", key);
        size_t i;
        json_t *x;
        json_array_foreach (v, i, x) {
            if (json_is_object(x)) {
                char k[32];
                snprintf(k, sizeof(k), "[%zu]", i);
                print_scalar(k, x, indent + 2);
            } else {
                char *s = json_is_string(x) ? strdup(json_string_value(x))
                                            : json_dumps(x, JSON_ENCODE_ANY);
                printf("%*s- %s\n", indent + 2, "", s ? s : "");
                free(s);
            }
        }
        return;
    }
    char *s = json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY);
    printf("%*s%-20s %s\n", indent, "", key, s ? s : "");
    free(s);
}

static void cell(json_t *o, const char *key, int width)
{
    json_t *v = json_object_get(o, key);
    char *s = !v || json_is_null(v) ? strdup("-")
              : json_is_string(v)   ? strdup(json_string_value(v))
                                    : json_dumps(v, JSON_ENCODE_ANY);
    printf("%-*s ", width, s ? s : "");
    free(s);
}

struct col {
    const char *key, *title;
    int width;
};

static void table(json_t *rows, const struct col *cols, int n)
{
    for (int i = 0; i < n; i++)
        printf("%-*s ", cols[i].width, cols[i].title);
    printf("\n");
    size_t k;
    json_t *row;
    json_array_foreach (rows, k, row) {
        for (int i = 0; i < n; i++)
            cell(row, cols[i].key, cols[i].width);
        printf("\n");
    }
}

static json_int_t int_of(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* tenant.top's rows, in the daemon's order. LISTED: "-" for a tenant the
 * config does not name (it came in on the default plan). */
static void print_top(json_t *rows)
{
    printf("%-24s %-6s %-10s %-9s %5s %8s %8s %8s %6s %10s %10s\n", "TENANT", "LISTED", "PLAN",
           "FARMING", "SCORE", "ADMITTED", "REFUSED", "FARM_REF", "KILLS", "OUT_TOKENS", "GPU_S");
    size_t i;
    json_t *t;
    json_array_foreach (rows, i, t) {
        json_t *f = json_object_get(t, "farming"), *plan = json_object_get(t, "plan");
        printf("%-24s %-6s %-10s %-9s %5" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
               " %8" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT " %6" JSON_INTEGER_FORMAT
               " %10" JSON_INTEGER_FORMAT " %10.3f\n",
               json_string_value(json_object_get(t, "tenant")),
               json_is_true(json_object_get(t, "listed")) ? "yes" : "-",
               json_is_string(plan) ? json_string_value(plan) : "-",
               json_is_true(json_object_get(f, "enabled"))
                   ? json_string_value(json_object_get(f, "level"))
                   : "off",
               int_of(f, "score"), int_of(t, "admitted"), int_of(t, "refusals_total"),
               int_of(f, "refused_total"), int_of(t, "kills_total"), int_of(t, "output_tokens"),
               (double)int_of(t, "used_us") / 1e6);
    }
}

static void human(const char *cmd, json_t *r)
{
    if (!strcmp(cmd, "tenant.top")) {
        print_top(json_object_get(r, "tenants"));
        return;
    }
    if (!strcmp(cmd, "workers")) {
        static const struct col c[] = {{"index", "WORKER", 6},     {"pid", "PID", 8},
                                       {"device", "DEVICE", 7},    {"state", "STATE", 9},
                                       {"request", "REQUEST", 26}, {"tokens_per_s", "TOK/S", 7},
                                       {"restarts", "RESTARTS", 8}};
        table(json_object_get(r, "workers"), c, 7);
        return;
    }
    if (!strcmp(cmd, "requests")) {
        static const struct col c[] = {{"id", "ID", 26},
                                       {"tenant", "TENANT", 14},
                                       {"ip", "IP", 16},
                                       {"state", "STATE", 8},
                                       {"age_ms", "AGE_MS", 8},
                                       {"tokens", "TOKENS", 6},
                                       {"device_ms", "DEVICE_MS", 9}};
        table(json_object_get(r, "requests"), c, 7);
        return;
    }
    if (!strcmp(cmd, "net.list")) {
        static const struct col c[] = {
            {"kind", "KIND", 6}, {"cidr", "RANGE", 44}, {"ttl_left_s", "TTL_LEFT_S", 10}};
        table(json_object_get(r, "rules"), c, 3);
        return;
    }
    if (!strcmp(cmd, "apikey.list")) {
        static const struct col c[] = {{"id", "ID", 12},           {"tenant", "TENANT", 20},
                                       {"plan", "PLAN", 10},       {"name", "NAME", 20},
                                       {"created", "CREATED", 10}, {"revoked", "REVOKED", 10}};
        table(json_object_get(r, "keys"), c, 6);
        return;
    }
    if (!strcmp(cmd, "tenant.list")) {
        json_t *rows = json_object_get(r, "tenants");
        printf("%-24s %-12s %-10s %-14s %-14s %s\n", "TENANT", "PLAN", "IN_FLIGHT", "BUDGET_USED_S",
               "BUDGET_LEFT_S", "BANNED");
        size_t k;
        json_t *t;
        json_array_foreach (rows, k, t) {
            json_t *b = json_object_get(t, "budget");
            json_t *left = json_object_get(b, "left_us");
            char lefts[32] = "-";
            if (json_is_integer(left))
                snprintf(lefts, sizeof(lefts), "%.3f", (double)json_integer_value(left) / 1e6);
            printf("%-24s %-12s %-10" JSON_INTEGER_FORMAT " %-14.3f %-14s %s\n",
                   json_string_value(json_object_get(t, "tenant")),
                   json_string_value(json_object_get(json_object_get(t, "plan"), "name")),
                   json_integer_value(json_object_get(t, "in_flight")),
                   (double)json_integer_value(json_object_get(b, "used_us")) / 1e6, lefts,
                   json_is_null(json_object_get(t, "banned_until_us")) ? "no" : "yes");
        }
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach (r, k, v) {
        if (strcmp(k, "ok") != 0)
            print_scalar(k, v, 0);
    }
}

static int refused_code(const char *code)
{
    static const char *const misuse_codes[] = {
        "bad_json", "bad_request", "unknown_command", "missing_argument", "bad_argument", NULL};
    for (const char *const *c = misuse_codes; *c; c++)
        if (!strcmp(*c, code))
            return EXIT_MISUSE;
    return EXIT_REFUSED;
}

/* admin.socket from a config file (only that key: an operator need not be
 * able to read the key files the rest of the config names). */
static int socket_from_config(const char *path, char *out, size_t len)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        fprintf(stderr, "gpuwardenctl: %s: %s\n", path, je.text);
        return -1;
    }
    const char *s = json_string_value(json_object_get(json_object_get(root, "admin"), "socket"));
    snprintf(out, len, "%s", s ? s : DEFAULT_SOCKET);
    json_decref(root);
    return 0;
}

int main(int argc, char **argv)
{
    const char *sock = getenv("GPUWARDEN_ADMIN_SOCKET");
    char from_cfg[512];
    int as_json = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (!strcmp(argv[i], "-s") && i + 1 < argc) {
            sock = argv[++i];
        } else if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            if (socket_from_config(argv[++i], from_cfg, sizeof(from_cfg)) != 0)
                return EXIT_MISUSE;
            sock = from_cfg;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            return misuse("unknown option %s", argv[i]);
        }
    }
    if (i >= argc)
        return misuse("no command", NULL);
    if (!sock || !*sock)
        sock = DEFAULT_SOCKET;
    int rc;
    json_t *req = build(argc - i, argv + i, &rc);
    if (!req)
        return rc;
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "%s", json_string_value(json_object_get(req, "cmd")));
    char *line = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(req);
    if (!line)
        return EXIT_TEMP;
    size_t n = strlen(line);
    char *framed = malloc(n + 2);
    memcpy(framed, line, n);
    memcpy(framed + n, "\n", 2);
    free(line);
    char *reply = NULL;
    rc = exchange(sock, framed, &reply);
    free(framed);
    if (rc != 0)
        return rc;
    json_error_t je;
    json_t *r = json_loads(reply, 0, &je);
    if (!r || !json_is_object(r)) {
        fprintf(stderr, "gpuwardenctl: the daemon answered something that is not JSON: %.200s\n",
                reply);
        free(reply);
        json_decref(r);
        return EXIT_TEMP;
    }
    int good = json_is_true(json_object_get(r, "ok"));
    if (as_json) {
        puts(reply);
    } else if (good) {
        human(cmd, r);
    } else {
        json_t *e = json_object_get(r, "error");
        fprintf(stderr, "gpuwardenctl: %s: %s\n", json_string_value(json_object_get(e, "code")),
                json_string_value(json_object_get(e, "message")));
    }
    rc = good ? 0
              : refused_code(json_string_value(json_object_get(json_object_get(r, "error"), "code"))
                                 ?: "");
    free(reply);
    json_decref(r);
    return rc;
}
