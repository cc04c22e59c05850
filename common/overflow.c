/* overflow.c - where new addresses go when the address table is full
 * (issue 18). Without it a table full of busy ip accounts refuses every new
 * client (503, fail closed), so a flood of fresh addresses locks out
 * everyone not yet known. With ip.overflow_rate set, a new address that
 * finds no room shares an overflow bucket with its neighbours instead: its
 * /24 (IPv4) or /48 (IPv6), hashed with the segment's creation time into
 * one of GW_OVF_BUCKETS buckets of GW_RATE_CELLS rate cells each, in its
 * own region. A flood from many addresses then spends its own buckets'
 * strict windows, and the clients the table already holds keep their own
 * accounts and limits.
 *
 * The buckets' cells are ordinary rate cells at generation 0 that are
 * never reclaimed, so gw_ledger_admit takes them like any account's cells
 * (all or nothing with the tenant and node cells), and they need no repair:
 * a death mid-admission errs as any rate cell does, towards refusing.
 * Different prefixes may hash to one bucket; they then share its windows
 * (stricter, never looser).
 */
#include "seg_internal.h"

#include <string.h>

struct gw_ovf_area {
    _Atomic uint64_t cell[GW_OVF_BUCKETS][GW_RATE_CELLS];
};
_Static_assert(sizeof(struct gw_ovf_area) == 32768, "overflow area layout");
_Static_assert(_Alignof(struct gw_ovf_area) == 8, "overflow area alignment");

size_t gw__ovf_area_bytes(void)
{
    return sizeof(struct gw_ovf_area);
}

_Atomic uint64_t *gw__ovf_cell(const struct gw_segment *seg, uint32_t bucket, int cell)
{
    return &seg->ovf->cell[bucket % GW_OVF_BUCKETS][cell];
}

struct gw_acct gw_overflow_acct(const struct gw_segment *seg, const struct gw_addr *client)
{
    struct gw_addr k = *client;
    int keep = gw_addr_is_v4(client) ? 96 + 24 : 48; /* bits of the 128-bit form */
    for (int i = keep / 8; i < 16; i++)
        k.b[i] = 0;
    uint64_t h = 0xcbf29ce484222325ull ^ seg->hdr->created_us; /* FNV-1a, seeded */
    for (int i = 0; i < 16; i++)
        h = (h ^ k.b[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    return (struct gw_acct){.index = GW_OVF_INDEX | (uint32_t)(h % GW_OVF_BUCKETS), .gen = 0};
}
