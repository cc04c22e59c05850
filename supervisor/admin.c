/* admin.c - the admin socket, served by the master from its poll loop:
 * the socket, its clients, and who they are. The commands they send are
 * admin_cmds.c's.
 *
 * One JSON request per line in, one JSON response per line out. Who may do
 * what is decided once per connection from the peer's credentials
 * (SO_PEERCRED, SO_PEERGROUPS) and the config's admin.operators /
 * admin.admins; uid 0 and the service's own uid (ExecReload runs as it) are
 * admins.
 *
 * The master must never block on a client: every client socket is
 * non-blocking, a line is at most LINE_MAX_BYTES bytes, output that does not
 * go out at once waits for POLLOUT, idle clients are closed, and at most
 * MAX_CLIENTS are served at once (the rest wait in the backlog).
 */
#include "admin_internal.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IDLE_NS (60ull * 1000000000ull) /* a silent client is closed after this */

/* ------------------------------------------------------------ credentials */

static int resolve_uid(const char *name, uid_t *out)
{
    char buf[4096];
    struct passwd pw, *res = NULL;
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || !res)
        return -ENOENT;
    *out = res->pw_uid;
    return 0;
}

static int resolve_gid(const char *name, gid_t *out)
{
    char *end;
    unsigned long n = strtoul(name, &end, 10);
    if (*name && !*end) {
        *out = (gid_t)n;
        return 0;
    }
    char buf[16384];
    struct group gr, *res = NULL;
    if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) != 0 || !res)
        return -ENOENT;
    *out = res->gr_gid;
    return 0;
}

struct peer {
    uid_t uid;
    gid_t gid;
    int n_groups;
    gid_t groups[64];
};

static int peer_matches(const struct peer *p, const char *entry)
{
    const char *v = strchr(entry, ':');
    if (!v)
        return 0;
    v++;
    if (strncmp(entry, "uid:", 4) == 0)
        return strtoul(v, NULL, 10) == p->uid;
    if (strncmp(entry, "user:", 5) == 0) {
        uid_t u;
        return resolve_uid(v, &u) == 0 && u == p->uid;
    }
    gid_t g;
    if (strncmp(entry, "gid:", 4) == 0)
        g = (gid_t)strtoul(v, NULL, 10);
    else if (strncmp(entry, "group:", 6) != 0 || resolve_gid(v, &g) != 0)
        return 0;
    if (p->gid == g)
        return 1;
    for (int i = 0; i < p->n_groups; i++)
        if (p->groups[i] == g)
            return 1;
    return 0;
}

static int peer_level(const struct gw_config *cfg, const struct peer *p)
{
    if (p->uid == 0 || p->uid == geteuid())
        return GW_ADMIN_ADMIN;
    for (int i = 0; i < cfg->n_admin_admins; i++)
        if (peer_matches(p, cfg->admin_admins[i]))
            return GW_ADMIN_ADMIN;
    for (int i = 0; i < cfg->n_admin_operators; i++)
        if (peer_matches(p, cfg->admin_operators[i]))
            return GW_ADMIN_OPERATOR;
    return GW_ADMIN_NONE;
}

static int peer_of(int fd, struct peer *p)
{
    struct ucred uc;
    socklen_t l = sizeof(uc);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) != 0)
        return -errno;
    p->uid = uc.uid;
    p->gid = uc.gid;
    l = sizeof(p->groups);
    /* Supplementary groups (Linux 4.13); without them only the primary
     * group counts. */
    p->n_groups = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, p->groups, &l) == 0
                      ? (int)(l / sizeof(gid_t))
                      : 0;
    return 0;
}

/* ------------------------------------------------------------------ socket */

int gw_admin_open(struct gw_admin **out, const struct gw_admin_host *host, struct gw_segment *seg,
                  char *err, size_t errlen)
{
    const struct gw_config *cfg = host->config(host->ctx);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(cfg->admin_socket) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "admin socket %s: path too long", cfg->admin_socket);
        return -ENAMETOOLONG;
    }
    struct gw_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "admin socket: out of memory");
        return -ENOMEM;
    }
    a->host = *host;
    a->seg = seg;
    a->started_ns = gw_mono_ns();
    for (int i = 0; i < MAX_CLIENTS; i++)
        a->cl[i].fd = -1;
    snprintf(a->path, sizeof(a->path), "%s", cfg->admin_socket);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", a->path);
    int rc = 0;
    a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (a->lfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "admin socket %s: socket: %s", a->path, strerror(-rc));
        goto fail;
    }
    struct stat st;
    if (lstat(a->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            rc = -EEXIST;
            snprintf(err, errlen, "admin socket %s: exists and is not a socket; remove it",
                     a->path);
            goto fail;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            rc = -EADDRINUSE;
            snprintf(err, errlen, "admin socket %s: another process serves it", a->path);
            goto fail;
        }
        unlink(a->path); /* stale: left by a master that died */
    }
    /* 0660 from the start: no moment where the socket is wider open. */
    mode_t old = umask(0117);
    int b = bind(a->lfd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    umask(old);
    if (b != 0) {
        rc = -e;
        snprintf(err, errlen, "admin socket %s: cannot bind: %s", a->path, strerror(e));
        goto fail;
    }
    if (cfg->admin_group[0]) {
        gid_t g;
        if (resolve_gid(cfg->admin_group, &g) != 0 || chown(a->path, (uid_t)-1, g) != 0) {
            rc = -(errno ? errno : ENOENT);
            snprintf(err, errlen, "admin socket %s: cannot give it to group %s: %s", a->path,
                     cfg->admin_group, errno ? strerror(errno) : "no such group");
            unlink(a->path);
            goto fail;
        }
    }
    if (listen(a->lfd, 16) != 0) {
        rc = -errno;
        snprintf(err, errlen, "admin socket %s: listen: %s", a->path, strerror(-rc));
        unlink(a->path);
        goto fail;
    }
    *out = a;
    return 0;
fail:
    if (a->lfd >= 0)
        close(a->lfd);
    free(a);
    return rc;
}

static void client_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->in_len = 0;
    c->fd = -1;
    c->closing = 0;
}

/* Sends what is pending; closes a finished closing client. */
static void client_flush(struct client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (w <= 0) {
            client_close(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    if (c->closing)
        client_close(c);
}

static void client_reply(struct client *c, char *line)
{
    if (!line) {
        c->closing = 1;
        return;
    }
    size_t n = strlen(line);
    char *nb = realloc(c->out, c->out_len + n + 1);
    if (!nb) {
        free(line);
        c->closing = 1;
        return;
    }
    memcpy(nb + c->out_len, line, n);
    nb[c->out_len + n] = '\n';
    c->out = nb;
    c->out_len += n + 1;
    free(line);
}

static void accept_clients(struct gw_admin *a)
{
    for (;;) {
        int slot = -1;
        for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
            if (a->cl[i].fd < 0)
                slot = i;
        if (slot < 0)
            return; /* the rest wait in the backlog */
        int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        struct client *c = &a->cl[slot];
        c->fd = fd;
        c->in_len = 0;
        c->last_ns = gw_mono_ns();
        struct peer p;
        if (peer_of(fd, &p) != 0) {
            client_close(c);
            continue;
        }
        c->uid = p.uid;
        c->level = peer_level(a->host.config(a->host.ctx), &p);
        if (c->level == GW_ADMIN_NONE) {
            say("uid %u gid %u refused: neither operator nor admin", (unsigned)p.uid,
                (unsigned)p.gid);
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "uid %u is neither operator nor admin (config admin.operators, "
                     "admin.admins)",
                     (unsigned)p.uid);
            client_reply(c, gw__admin_dump(gw__admin_error("forbidden", msg)));
            c->closing = 1;
            client_flush(c);
        }
    }
}

static void client_read(struct gw_admin *a, struct client *c)
{
    for (;;) {
        if (c->in_len == sizeof(c->in)) {
            char msg[64];
            snprintf(msg, sizeof(msg), "a request line is at most %d bytes", LINE_MAX_BYTES);
            client_reply(c, gw__admin_dump(gw__admin_error("line_too_long", msg)));
            c->closing = 1;
            return;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            c->closing = 1; /* EOF: answer what came, then close */
            if (c->in_len) {
                client_reply(
                    c, gw__admin_dump(gw__admin_dispatch(a, c->in, c->in_len, c->level, c->uid)));
                c->in_len = 0;
            }
            return;
        }
        c->last_ns = gw_mono_ns();
        size_t start = 0;
        size_t end = c->in_len + (size_t)n;
        for (size_t i = c->in_len; i < end; i++) {
            if (c->in[i] != '\n')
                continue;
            size_t l = i - start;
            if (l && c->in[start + l - 1] == '\r')
                l--;
            if (l)
                client_reply(
                    c, gw__admin_dump(gw__admin_dispatch(a, c->in + start, l, c->level, c->uid)));
            start = i + 1;
        }
        memmove(c->in, c->in + start, end - start);
        c->in_len = end - start;
    }
}

int gw_admin_pollfds(struct gw_admin *a, struct pollfd *p, int max)
{
    if (!a)
        return 0;
    gw__admin_apply_drains(a);
    int n = 0, have = 0;
    uint64_t now = gw_mono_ns();
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct client *c = &a->cl[i];
        if (c->fd >= 0 && now - c->last_ns > IDLE_NS)
            client_close(c);
        have += c->fd >= 0;
    }
    if (have < MAX_CLIENTS && n < max)
        p[n++] = (struct pollfd){.fd = a->lfd, .events = POLLIN};
    for (int i = 0; i < MAX_CLIENTS && n < max; i++) {
        struct client *c = &a->cl[i];
        if (c->fd < 0)
            continue;
        short ev = (short)((c->closing ? 0 : POLLIN) | (c->out_len ? POLLOUT : 0));
        p[n++] = (struct pollfd){.fd = c->fd, .events = ev};
    }
    return n;
}

void gw_admin_serve(struct gw_admin *a, const struct pollfd *p, int n)
{
    if (!a)
        return;
    for (int k = 0; k < n; k++) {
        if (!p[k].revents)
            continue;
        if (p[k].fd == a->lfd) {
            accept_clients(a);
            continue;
        }
        for (int i = 0; i < MAX_CLIENTS; i++) {
            struct client *c = &a->cl[i];
            if (c->fd != p[k].fd)
                continue;
            if (p[k].revents & (POLLIN | POLLHUP | POLLERR))
                client_read(a, c);
            if (c->fd >= 0)
                client_flush(c);
            break;
        }
    }
}

void gw_admin_close(struct gw_admin *a)
{
    if (!a)
        return;
    for (int i = 0; i < MAX_CLIENTS; i++)
        client_close(&a->cl[i]);
    if (a->lfd >= 0) {
        close(a->lfd);
        unlink(a->path);
    }
    free(a);
}
