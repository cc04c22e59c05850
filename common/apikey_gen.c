/* apikey_gen.c - the generation of the API keys file (issue 18), one word
 * in the segment's own region.
 *
 * The keys themselves live in a file the master rewrites atomically
 * (supervisor/apikeys.c: temp file, fsync, rename, fsync of the directory).
 * After each rename, and after each accepted reload and at start-up, the
 * master moves this generation on; a front that sees a generation it has
 * not loaded re-reads the file before it checks a key. Because the master
 * moves it on after the rename and before it answers the admin command, a
 * key revoked by a command that returned is refused by every front from
 * its next request on.
 *
 * Who repairs what: nothing to repair. The word changes by one atomic add.
 * A master killed between the rename and the add leaves fronts on the old
 * file until the next master, which moves the generation on at start-up.
 */
#include "seg_internal.h"

struct gw_apikey_area {
    _Atomic uint64_t generation;
    uint64_t pad[7];
};
_Static_assert(sizeof(struct gw_apikey_area) == 64, "api key area layout");
_Static_assert(_Alignof(struct gw_apikey_area) == 8, "api key area alignment");

size_t gw__apikey_area_bytes(void)
{
    return sizeof(struct gw_apikey_area);
}

uint64_t gw_apikey_gen(const struct gw_segment *seg)
{
    if (!seg->apikeys)
        return 0;
    /* acquire: pairs with the release in gw_apikey_gen_bump, so a front that
     * reads the new generation opens the file after the master's rename. */
    return atomic_load_explicit(&seg->apikeys->generation, memory_order_acquire);
}

void gw_apikey_gen_bump(struct gw_segment *seg)
{
    if (!seg->apikeys)
        return;
    /* release: the rename (and everything before it) happens-before a
     * front's acquire of the new value; the master is the one writer. */
    atomic_fetch_add_explicit(&seg->apikeys->generation, 1, memory_order_release);
}
