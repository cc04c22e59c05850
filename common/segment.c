/* segment.c - create, attach and check the shared segment file.
 *
 * The file is the state: budgets and counters survive a restart because they
 * live here. A file whose header does not describe exactly this layout is
 * refused with its name and the mismatch; it is never reinterpreted.
 */
#include "seg_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALIGN64(x) (((x) + 63u) & ~(uint64_t)63u)

struct layout {
    uint64_t off_accounts, off_budgets, off_slots, off_qcells, off_lanes, off_lenest, total;
    uint64_t off_metrics, off_limits; /* after the learned lengths; not in the header */
    uint64_t off_farm;                /* farming records, after the limits (farm.c) */
    uint64_t off_nets;                /* address-range rules, after the farming records */
    uint64_t off_ovf;                 /* overflow buckets, after the rules (overflow.c) */
    uint64_t off_jti;                 /* revoked JWT ids, after the buckets (jti.c) */
    uint64_t off_cluster; /* after the limits: area, names, budgets x rate cells, x GPU cells */
    uint64_t off_apikeys; /* the API keys file's generation (apikey_gen.c) */
    uint64_t off_mvlog;   /* exact moving windows' logs, after the cluster (moving.c) */
    uint64_t off_tstats;  /* per-tenant counters, after the cluster cells */
    uint64_t off_clout;   /* output-token lease cells, after the counters (cluster_out.c) */
    uint64_t off_farm_ip; /* address farming records, after the output cells (farm_ip.c) */
    uint64_t budget_stride, slot_stride;
};

static int is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

/* Checks cfg and computes where each region goes. */
static int layout_of(const struct gw_seg_config *c, struct layout *l, char *err, size_t errlen)
{
    if (!is_pow2(c->accounts) || c->accounts < GW_PROBE || c->accounts > (1u << 30)) {
        snprintf(err, errlen, "accounts=%" PRIu32 ": must be a power of two in [%d, 2^30]",
                 c->accounts, GW_PROBE);
        return -EINVAL;
    }
    if (c->budgets < 1 || c->budgets > (1u << 24)) {
        snprintf(err, errlen, "budgets=%" PRIu32 ": must be in [1, 2^24]", c->budgets);
        return -EINVAL;
    }
    /* Slot indices travel in 16 bits through the queue, and 0xffff is kept
     * free so that no reference can spell the queue's hole marker. */
    if (c->slots < 1 || c->slots > 65535) {
        snprintf(err, errlen, "slots=%" PRIu32 ": must be in [1, 65535]", c->slots);
        return -EINVAL;
    }
    if (!is_pow2(c->queue) || c->queue < 2 || c->queue > (1u << 30)) {
        snprintf(err, errlen, "queue=%" PRIu32 ": must be a power of two in [2, 2^30]", c->queue);
        return -EINVAL;
    }
    if (c->lanes < 1 || c->lanes > 255) {
        snprintf(err, errlen, "lanes=%" PRIu32 ": must be in [1, 255]", c->lanes);
        return -EINVAL;
    }
    if (c->prompt_bytes > (16u << 20) || c->output_bytes > (16u << 20)) {
        snprintf(err, errlen, "prompt_bytes/output_bytes: at most 16 MiB each");
        return -EINVAL;
    }
    l->budget_stride =
        ALIGN64(sizeof(struct gw_budget) + (uint64_t)c->lanes * sizeof(struct gw_money_col));
    if (c->ip_farm_recs > (1u << 20)) {
        snprintf(err, errlen, "ip_farm_recs=%" PRIu32 ": at most 2^20", c->ip_farm_recs);
        return -EINVAL;
    }
    if (c->reserved) {
        snprintf(err, errlen, "reserved=%" PRIu32 ": must be 0", c->reserved);
        return -EINVAL;
    }
    if (c->resume_tokens > (1u << 20)) {
        snprintf(err, errlen, "resume_tokens=%" PRIu32 ": at most 2^20", c->resume_tokens);
        return -EINVAL;
    }
    l->slot_stride = ALIGN64(SLOT_FIXED_BYTES + (uint64_t)c->prompt_bytes + c->output_bytes +
                             GW_RESUME_BYTES(c->resume_tokens));
    l->off_accounts = ALIGN64(sizeof(struct gw_seg_header));
    l->off_budgets = ALIGN64(l->off_accounts + (uint64_t)c->accounts * sizeof(struct gw_account));
    l->off_slots = ALIGN64(l->off_budgets + (uint64_t)c->budgets * l->budget_stride);
    l->off_qcells = ALIGN64(l->off_slots + (uint64_t)c->slots * l->slot_stride);
    l->off_lanes = ALIGN64(l->off_qcells + (uint64_t)c->queue * sizeof(struct gw_qcell));
    l->off_lenest = ALIGN64(l->off_lanes + (uint64_t)c->lanes * sizeof(struct gw_lane));
    l->off_metrics = ALIGN64(l->off_lenest + (uint64_t)c->budgets * sizeof(struct gw_lenest_rec));
    l->off_limits = ALIGN64(l->off_metrics + sizeof(struct gw_metrics_area));
    l->off_farm = ALIGN64(l->off_limits + sizeof(struct gw_limits_area));
    l->off_nets = ALIGN64(l->off_farm + (uint64_t)c->budgets * sizeof(struct gw_farm_rec));
    l->off_ovf = ALIGN64(l->off_nets + gw__net_area_bytes());
    l->off_jti = ALIGN64(l->off_ovf + gw__ovf_area_bytes());
    l->off_cluster = ALIGN64(l->off_jti + gw__jti_area_bytes());
    l->off_apikeys = ALIGN64(
        l->off_cluster + sizeof(struct gw_cluster_area) + sizeof(struct gw_cl_peers) +
        (uint64_t)c->budgets * (sizeof(struct gw_cluster_cell) + sizeof(struct gw_cluster_gpu)));
    l->off_mvlog = ALIGN64(l->off_apikeys + gw__apikey_area_bytes());
    l->off_tstats = ALIGN64(l->off_mvlog + gw__mvlog_area_bytes(c->accounts));
    l->off_clout = ALIGN64(l->off_tstats + (uint64_t)c->budgets * sizeof(struct gw_tstat_rec));
    l->off_farm_ip = ALIGN64(l->off_clout + (uint64_t)c->budgets * sizeof(struct gw_cluster_out));
    l->total = ALIGN64(l->off_farm_ip + (uint64_t)c->ip_farm_recs * sizeof(struct gw_farm_iprec));
    return 0;
}

size_t gw_segment_size(const struct gw_seg_config *cfg, char *err, size_t errlen)
{
    struct layout l;
    return layout_of(cfg, &l, err, errlen) ? 0 : (size_t)l.total;
}

static void bind_regions(struct gw_segment *seg, const struct layout *l)
{
    struct gw_seg_header *h = (struct gw_seg_header *)seg->base;
    seg->hdr = h;
    seg->cfg = h->cfg;
    seg->accounts = (struct gw_account *)(seg->base + h->off_accounts);
    seg->budgets = (struct gw_budget *)(seg->base + h->off_budgets);
    seg->slots = (struct gw_slot *)(seg->base + h->off_slots);
    seg->qcells = (struct gw_qcell *)(seg->base + h->off_qcells);
    seg->lanes = (struct gw_lane *)(seg->base + h->off_lanes);
    seg->metrics = (struct gw_metrics_area *)(seg->base + l->off_metrics);
    seg->limits = (struct gw_limits_area *)(seg->base + l->off_limits);
    seg->nets = (struct gw_net_area *)(seg->base + l->off_nets);
    seg->ovf = (struct gw_ovf_area *)(seg->base + l->off_ovf);
    seg->jti = (struct gw_jti_area *)(seg->base + l->off_jti);
    seg->cluster = (struct gw_cluster_area *)(seg->base + l->off_cluster);
    uint64_t o = l->off_cluster + sizeof(struct gw_cluster_area);
    seg->cl_peers = (struct gw_cl_peers *)(seg->base + o);
    o += sizeof(struct gw_cl_peers);
    seg->cl_cells = (struct gw_cluster_cell *)(seg->base + o);
    o += (uint64_t)h->cfg.budgets * sizeof(struct gw_cluster_cell);
    seg->cl_gpu = (struct gw_cluster_gpu *)(seg->base + o);
    seg->apikeys = (struct gw_apikey_area *)(seg->base + l->off_apikeys);
    seg->mvlog = (struct gw_mvlog *)(seg->base + l->off_mvlog);
    seg->lenest = (struct gw_lenest_rec *)(seg->base + h->off_lenest);
    seg->farm = (struct gw_farm_rec *)(seg->base + l->off_farm);
    seg->tstats = (struct gw_tstat_rec *)(seg->base + l->off_tstats);
    seg->cl_out = (struct gw_cluster_out *)(seg->base + l->off_clout);
    seg->farm_ip =
        h->cfg.ip_farm_recs ? (struct gw_farm_iprec *)(seg->base + l->off_farm_ip) : NULL;
    seg->budget_stride = h->budget_stride;
    seg->slot_stride = h->slot_stride;
    seg->lane = -1;
    seg->slot_hint = (uint32_t)getpid() % h->cfg.slots;
}

/* Fresh file contents: header, and the queue's cells numbered for lap 0.
 * Everything else is zero, and zero is a valid idle state for every cell
 * (an empty account, a full budget, a free slot, a free lane, an empty
 * learned-length histogram). */
static void init_segment(uint8_t *base, const struct gw_seg_config *cfg, const struct layout *l)
{
    struct gw_seg_header *h = (struct gw_seg_header *)base;
    h->version = GW_SEG_VERSION;
    h->header_bytes = sizeof(*h);
    h->file_bytes = l->total;
    h->cfg = *cfg;
    h->off_accounts = l->off_accounts;
    h->off_budgets = l->off_budgets;
    h->off_slots = l->off_slots;
    h->off_qcells = l->off_qcells;
    h->off_lanes = l->off_lanes;
    h->off_lenest = l->off_lenest;
    h->budget_stride = l->budget_stride;
    h->slot_stride = l->slot_stride;
    h->created_us = gw_now_us();
    struct gw_qcell *q = (struct gw_qcell *)(base + l->off_qcells);
    for (uint32_t i = 0; i < cfg->queue; i++)
        atomic_init(&q[i].w, QW(i, QNIL));
    memcpy(h->magic, GW_SEG_MAGIC, sizeof(h->magic));
}

static int create_file(const char *path, const struct gw_seg_config *cfg, const struct layout *l,
                       char *err, size_t errlen)
{
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.new.%d", path, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(e));
        return -e;
    }
    int rc = 0;
    uint8_t *base = MAP_FAILED;
    if (ftruncate(fd, (off_t)l->total) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot size to %" PRIu64 " bytes: %s", tmp, l->total,
                 strerror(-rc));
        goto fail;
    }
    base = mmap(NULL, l->total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = -errno;
        snprintf(err, errlen, "%s: mmap: %s", tmp, strerror(-rc));
        goto fail;
    }
    init_segment(base, cfg, l);
    if (msync(base, l->total, MS_SYNC) != 0 || fsync(fd) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: sync: %s", tmp, strerror(-rc));
        goto fail;
    }
    /* rename() makes the file appear whole or not at all: a master killed
     * while creating leaves only a .new file behind, never a half header. */
    if (rename(tmp, path) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot rename into place: %s", path, strerror(-rc));
        goto fail;
    }
    munmap(base, l->total);
    close(fd);
    return 0;
fail:
    if (base != MAP_FAILED)
        munmap(base, l->total);
    close(fd);
    unlink(tmp);
    return rc;
}

/* Maps an existing file and checks that its header describes it. */
static int attach_file(struct gw_segment *seg, const char *path, char *err, size_t errlen)
{
    memset(seg, 0, sizeof(*seg));
    seg->fd = -1;
    seg->lane = -1;
    snprintf(seg->path, sizeof(seg->path), "%s", path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        snprintf(err, errlen, "%s: fstat: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    size_t size = (size_t)st.st_size;
    if (size < sizeof(struct gw_seg_header)) {
        snprintf(err, errlen, "%s: %zu bytes, smaller than a segment header (%zu)", path, size,
                 sizeof(struct gw_seg_header));
        close(fd);
        return GW_ELAYOUT;
    }
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        snprintf(err, errlen, "%s: mmap: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    const struct gw_seg_header *h = (const struct gw_seg_header *)base;
    struct layout l;
    char why[200];
    int rc = GW_ELAYOUT;
    if (memcmp(h->magic, GW_SEG_MAGIC, sizeof(h->magic)) != 0) {
        snprintf(err, errlen, "%s: not a gpuwarden segment (bad magic)", path);
        goto fail;
    }
    if (h->version != GW_SEG_VERSION) {
        snprintf(err, errlen, "%s: layout version %" PRIu32 ", this build reads %u", path,
                 h->version, GW_SEG_VERSION);
        goto fail;
    }
    if (h->header_bytes != sizeof(struct gw_seg_header)) {
        snprintf(err, errlen, "%s: header is %" PRIu32 " bytes, this build's is %zu", path,
                 h->header_bytes, sizeof(struct gw_seg_header));
        goto fail;
    }
    if (layout_of(&h->cfg, &l, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: header holds an invalid size: %s", path, why);
        goto fail;
    }
    if (h->file_bytes != l.total || h->off_accounts != l.off_accounts ||
        h->off_budgets != l.off_budgets || h->off_slots != l.off_slots ||
        h->off_qcells != l.off_qcells || h->off_lanes != l.off_lanes ||
        h->off_lenest != l.off_lenest || h->budget_stride != l.budget_stride ||
        h->slot_stride != l.slot_stride) {
        snprintf(err, errlen, "%s: region offsets in the header do not match its sizes", path);
        goto fail;
    }
    if (size != h->file_bytes) {
        snprintf(err, errlen, "%s: truncated: %zu bytes, its header says %" PRIu64, path, size,
                 h->file_bytes);
        goto fail;
    }
    seg->fd = fd;
    seg->size = size;
    seg->base = base;
    bind_regions(seg, &l);
    return 0;
fail:
    munmap(base, size);
    close(fd);
    return rc;
}

int gw_segment_attach(struct gw_segment *seg, const char *path, char *err, size_t errlen)
{
    return attach_file(seg, path, err, errlen);
}

int gw_segment_open(struct gw_segment *seg, const char *path, const struct gw_seg_config *cfg,
                    char *err, size_t errlen)
{
    struct layout l;
    char why[200];
    if (layout_of(cfg, &l, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -EINVAL;
    }
    if (strlen(path) >= sizeof(seg->path) - 20) {
        snprintf(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    if (access(path, F_OK) != 0) {
        if (errno != ENOENT) {
            int e = errno;
            snprintf(err, errlen, "%s: %s", path, strerror(e));
            return -e;
        }
        int rc = create_file(path, cfg, &l, err, errlen);
        if (rc != 0)
            return rc;
    }
    int rc = attach_file(seg, path, err, errlen);
    if (rc != 0)
        return rc;
    /* An existing file must have been made with the sizes asked for now:
     * resizing regions in place would reinterpret every index. */
    const struct gw_seg_config *h = &seg->cfg;
    const char *what = NULL;
    uint32_t have = 0, want = 0;
#define CMP(f)                                                                                     \
    do {                                                                                           \
        if (!what && h->f != cfg->f) {                                                             \
            what = #f;                                                                             \
            have = h->f;                                                                           \
            want = cfg->f;                                                                         \
        }                                                                                          \
    } while (0)
    CMP(accounts);
    CMP(budgets);
    CMP(slots);
    CMP(queue);
    CMP(lanes);
    CMP(prompt_bytes);
    CMP(output_bytes);
    CMP(resume_tokens);
    CMP(ip_farm_recs);
#undef CMP
    if (what) {
        snprintf(err, errlen,
                 "%s: created with %s=%" PRIu32 ", config asks for %" PRIu32
                 " (move the file away to start over with new sizes)",
                 path, what, have, want);
        gw_segment_close(seg);
        return GW_ELAYOUT;
    }
    return 0;
}

void gw_segment_close(struct gw_segment *seg)
{
    if (!seg->base)
        return;
    if (seg->lane >= 0) {
        /* release: our last journal and column writes happen-before the next
         * holder of this lane sees it free. */
        atomic_store_explicit(&lane_at(seg, seg->lane)->pid, 0, memory_order_release);
        seg->lane = -1;
    }
    munmap(seg->base, seg->size);
    close(seg->fd);
    seg->base = NULL;
    seg->fd = -1;
}

void gw_segment_stats(const struct gw_segment *seg, struct gw_seg_stats *st)
{
    struct gw_seg_header *h = seg->hdr;
    /* relaxed: statistics, each counter read on its own. */
    st->accounts_live = atomic_load_explicit(&h->accounts_live, memory_order_relaxed);
    st->accounts_reclaimed = atomic_load_explicit(&h->accounts_reclaimed, memory_order_relaxed);
    st->table_full = atomic_load_explicit(&h->table_full, memory_order_relaxed);
    st->budgets_used = atomic_load_explicit(&h->budgets_used, memory_order_relaxed);
    st->repairs = atomic_load_explicit(&h->repairs, memory_order_relaxed);
}

int gw_lane_acquire(struct gw_segment *seg)
{
    uint64_t pid = (uint64_t)getpid();
    for (uint32_t i = 0; i < seg->cfg.lanes; i++) {
        struct gw_lane *ln = lane_at(seg, (int)i);
        uint64_t zero = 0;
        /* acq_rel: acquire pairs with the release that freed the lane (the
         * previous holder's or the repair's writes are visible to us);
         * release publishes our claim. */
        if (atomic_compare_exchange_strong_explicit(&ln->pid, &zero, pid, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            atomic_store_explicit(&ln->j_op, J_IDLE, memory_order_relaxed);
            atomic_store_explicit(&ln->q_op, Q_IDLE, memory_order_relaxed);
            atomic_store_explicit(&ln->role, GW_ROLE_NONE, memory_order_relaxed);
            seg->lane = (int)i;
            return 0;
        }
    }
    return GW_EFULL;
}

pid_t gw_lane_pid(const struct gw_segment *seg, int lane)
{
    if (lane < 0 || (uint32_t)lane >= seg->cfg.lanes)
        return 0;
    /* acquire: a caller that sees the pid sees what the lane wrote before. */
    return (pid_t)atomic_load_explicit(&lane_at(seg, lane)->pid, memory_order_acquire);
}
