/* front_loop.c - a front process's life: it attaches to the segment,
 * listens on the sockets the master handed it, and runs its event loop:
 * the workers' wake-ups and a tick poll the jobs (front_jobs.c) and the
 * requests parked for the farm's lease (front_cluster.c); SIGTERM drains
 * (no new requests, the running ones finish or are cancelled at
 * drain_timeout_ms); SIGHUP reloads the config (limits, plans, tenants and
 * keys; sizes and sockets need a restart). What a request means and who
 * pays for it is front.c's.
 */
#include "front_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICK_MS 20

void gw__front_log(const struct front *f, const char *fmt, ...)
{
    char who[32];
    snprintf(who, sizeof(who), "front %d", f->index);
    va_list ap;
    va_start(ap, fmt);
    gw_vlog(who, fmt, ap);
    va_end(ap);
}

/* Keeps the file's tenant plans for front.c's limits_sync (after a config load). */
static int keep_file_plans(struct front *f)
{
    free(f->file_plans);
    f->file_plans = calloc((size_t)f->cfg->n_tenants + 1, sizeof(struct gw_plan));
    if (!f->file_plans)
        return -ENOMEM;
    for (int i = 0; i < f->cfg->n_tenants; i++)
        f->file_plans[i] = f->cfg->tenants[i].plan;
    f->limits_epoch = 0; /* apply the overrides again */
    return 0;
}

/* The model file's mtime ("created" of GET /v1/models); 0 when it cannot
 * be read (the front never opens the model). */
static uint64_t model_created(const struct gw_config *cfg)
{
    struct stat st;
    return stat(cfg->model_path, &st) == 0 && st.st_mtime > 0 ? (uint64_t)st.st_mtime : 0;
}

static void close_listeners(struct front *f)
{
    for (int i = 0; i < f->n_listeners; i++)
        if (!uv_is_closing((uv_handle_t *)&f->listeners[i]))
            uv_close((uv_handle_t *)&f->listeners[i], NULL);
    if (f->has_metrics && !uv_is_closing((uv_handle_t *)&f->metrics_listener))
        uv_close((uv_handle_t *)&f->metrics_listener, NULL);
}

static void on_wake(uv_poll_t *p, int status, int events)
{
    struct front *f = p->data;
    (void)status;
    (void)events;
    uint64_t n;
    while (read(f->fds->fronts[f->index], &n, sizeof(n)) > 0)
        ;
    gw__front_jobs_poll(f);
    gw__front_cluster_poll(f);
}

static void on_tick(uv_timer_t *t)
{
    struct front *f = t->data;
    gw__front_jobs_poll(f);
    gw__front_cluster_poll(f);
    gw_proc_heartbeat(&f->seg, -1);
    if (!f->draining)
        return;
    if ((f->jobs || f->parked) && gw_mono_ns() > f->drain_deadline_ns) {
        for (struct job *j = f->jobs; j; j = j->next)
            if (gw_slot_move(&f->seg, j->ref, GW_SLOT_QUEUED, GW_SLOT_FAILED) != 0)
                gw_slot_cancel(&f->seg, j->ref, GW_CANCEL_DRAIN);
            else
                gw_run_finish(&f->seg, j->ref.index, GW_FIN_CANCELLED);
        f->drain_deadline_ns = UINT64_MAX; /* once */
    }
    if (!f->jobs && !f->parked)
        uv_stop(f->loop);
}

static void on_term(uv_signal_t *s, int sig)
{
    struct front *f = s->data;
    (void)sig;
    if (f->draining)
        return;
    f->draining = 1;
    f->drain_deadline_ns = gw_mono_ns() + (uint64_t)f->cfg->drain_timeout_ms * 1000000u;
    gw_proc_set_state(&f->seg, GW_PROC_DRAINING);
    close_listeners(f);
    gw__front_log(f, "draining: %s in flight", f->jobs ? "requests" : "nothing");
}

static void on_hup(uv_signal_t *s, int sig)
{
    struct front *f = s->data;
    (void)sig;
    struct gw_config *ncfg;
    char err[4096];
    if (gw_config_load(&ncfg, f->config_path, err, sizeof(err)) != 0) {
        gw__front_log(f, "reload refused, keeping the running config:\n%s", err);
        return;
    }
    struct gw_auth *na;
    if (gw_auth_new(&na, ncfg, 0) != 0) {
        gw__front_log(f, "reload refused: cannot build the key set");
        gw_config_free(ncfg);
        return;
    }
    struct gw_unbounded *nu;
    if (gw_unbounded_new(&nu, ncfg, err, sizeof(err)) != 0) {
        gw__front_log(f, "reload refused: %s", err);
        gw_auth_free(na);
        gw_config_free(ncfg);
        return;
    }
    gw_unbounded_free(f->unb);
    f->unb = nu;
    /* Sizes and sockets need a restart (the master says so); limits, plans,
     * tenants and keys take effect now. */
    ncfg->segment = f->cfg->segment;
    ncfg->cluster = f->cfg->cluster; /* the agent keeps its section until a restart */
    /* as the master keeps it: the segment and the API keys' live copy are there */
    memcpy(ncfg->state_dir, f->cfg->state_dir, sizeof(ncfg->state_dir));
    gw_auth_free(f->auth);
    gw_config_free(f->cfg);
    f->auth = na;
    f->cfg = ncfg;
    if (keep_file_plans(f) != 0)
        gw__front_log(
            f, "reload: out of memory keeping the file's plans; run-time limits not applied");
    f->model_created_s = model_created(ncfg);
    gw_log_set_format(ncfg->log_format);
    gw__front_mark_proxy_listeners(f);
    gw__front_log(f, "reloaded %s", f->config_path);
}

int gw_front_main(const char *config_path, int index, const struct gw_fds *fds)
{
    struct front f = {.config_path = config_path, .index = index, .fds = fds};
    char err[4096], who[32];
    snprintf(who, sizeof(who), "front %d", index);
    signal(SIGPIPE, SIG_IGN);
    if (index < 0 || index >= fds->n_fronts) {
        gw_logf(GW_LOG_ERR, who, NULL, 0, "no wake-up descriptor for this front");
        return 100;
    }
    if (gw_config_load(&f.cfg, config_path, err, sizeof(err)) != 0) {
        gw_logf(GW_LOG_ERR, who, NULL, 0, "%s", err);
        return 111;
    }
    gw_log_set_format(f.cfg->log_format);
    char path[300];
    gw_segment_path(f.cfg, path, sizeof(path));
    if (gw_segment_attach(&f.seg, path, err, sizeof(err)) != 0 || gw_lane_acquire(&f.seg) != 0) {
        gw_logf(GW_LOG_ERR, who, NULL, 0, "segment: %s", err);
        return 111;
    }
    gw_proc_set_role(&f.seg, GW_ROLE_FRONT, index);
    if (gw_auth_new(&f.auth, f.cfg, 0) != 0 || gw_apikeys_new(&f.keys) != 0) {
        gw_logf(GW_LOG_ERR, who, NULL, 0, "cannot build the key set");
        return 111;
    }
    if (keep_file_plans(&f) != 0) {
        gw_logf(GW_LOG_ERR, who, NULL, 0, "out of memory");
        return 111;
    }
    if (gw_unbounded_new(&f.unb, f.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuwarden[front %d]: %s\n", index, err);
        return 111;
    }
    f.model_created_s = model_created(f.cfg);
    if (getrandom(&f.id_seed, sizeof(f.id_seed), 0) != sizeof(f.id_seed))
        f.id_seed = gw_mono_ns() ^ (uint64_t)getpid();
    f.loop = uv_default_loop();
    for (int i = 0; i < fds->n_listen; i++) {
        uv_tcp_init(f.loop, &f.listeners[i]);
        f.listeners[i].data = &f;
        if (uv_tcp_open(&f.listeners[i], fds->listen[i]) != 0 ||
            uv_listen((uv_stream_t *)&f.listeners[i], 1024, gw__front_on_connection) != 0) {
            gw_logf(GW_LOG_ERR, who, NULL, 0, "cannot listen on descriptor %d", fds->listen[i]);
            return 111;
        }
        f.n_listeners++;
    }
    if (fds->metrics >= 0) { /* metrics.listen: /metrics alone (front_metrics.c) */
        uv_tcp_init(f.loop, &f.metrics_listener);
        f.metrics_listener.data = &f;
        if (uv_tcp_open(&f.metrics_listener, fds->metrics) != 0 ||
            uv_listen((uv_stream_t *)&f.metrics_listener, 128, gw__front_on_connection) != 0) {
            gw_logf(GW_LOG_ERR, who, NULL, 0, "cannot listen on descriptor %d", fds->metrics);
            return 111;
        }
        f.has_metrics = 1;
    }
    gw__front_mark_proxy_listeners(&f);
    uv_poll_init(f.loop, &f.wake, fds->fronts[index]);
    f.wake.data = &f;
    uv_poll_start(&f.wake, UV_READABLE, on_wake);
    uv_timer_init(f.loop, &f.tick);
    f.tick.data = &f;
    uv_timer_start(&f.tick, on_tick, TICK_MS, TICK_MS);
    uv_signal_init(f.loop, &f.sigterm);
    uv_signal_init(f.loop, &f.sigint);
    uv_signal_init(f.loop, &f.sighup);
    f.sigterm.data = f.sigint.data = f.sighup.data = &f;
    uv_signal_start(&f.sigterm, on_term, SIGTERM);
    uv_signal_start(&f.sigint, on_term, SIGINT);
    uv_signal_start(&f.sighup, on_hup, SIGHUP);
    gw_proc_set_state(&f.seg, GW_PROC_READY);
    uv_run(f.loop, UV_RUN_DEFAULT);
    /* drained: everything settled and released */
    gw_auth_free(f.auth);
    gw_apikeys_drop(f.keys);
    gw_unbounded_free(f.unb);
    gw_segment_close(&f.seg);
    gw_config_free(f.cfg);
    free(f.file_plans);
    free(f.cc);
    return 0;
}
