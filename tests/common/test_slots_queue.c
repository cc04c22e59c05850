/* test_slots_queue.c - the slot state machine and the MPMC queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>

static void test_slot_legal_transitions(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_segment *seg = &f->seg;
    static const int paths[][4] = {
        {GW_SLOT_QUEUED, GW_SLOT_RUNNING, GW_SLOT_DONE, -1},
        {GW_SLOT_QUEUED, GW_SLOT_RUNNING, GW_SLOT_FAILED, -1},
        {GW_SLOT_QUEUED, GW_SLOT_RUNNING, GW_SLOT_KILLED, -1},
        {GW_SLOT_QUEUED, GW_SLOT_FAILED, -1, -1},
        {GW_SLOT_QUEUED, GW_SLOT_KILLED, -1, -1},
        {GW_SLOT_FAILED, -1, -1, -1},
        {GW_SLOT_KILLED, -1, -1, -1},
    };
    for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
        struct gw_slot_ref r;
        assert_int_equal(gw_slot_claim(seg, &r), 0);
        assert_int_equal(gw_slot_state(seg, r), GW_SLOT_ADMITTED);
        assert_int_equal(gw_slot_owner(seg, r), seg->lane);
        int from = GW_SLOT_ADMITTED;
        for (int i = 0; i < 4 && paths[p][i] >= 0; i++) {
            assert_int_equal(gw_slot_move(seg, r, from, paths[p][i]), 0);
            from = paths[p][i];
            assert_int_equal(gw_slot_state(seg, r), from);
        }
        assert_int_equal(gw_slot_release(seg, r), GW_ESTATE); /* not settled */
        assert_int_equal(gw_budget_settle(seg, r), 1);
        assert_int_equal(gw_budget_settle(seg, r), 0); /* twice: a no-op */
        assert_int_equal(gw_slot_release(seg, r), 0);
        assert_int_equal(gw_slot_state(seg, r), GW_SLOT_FREE);
        assert_int_equal(gw_slot_release(seg, r), GW_ESTATE);
    }
    fx_close(f);
}

static void test_slot_illegal_transitions_are_refused(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_segment *seg = &f->seg;
    struct gw_slot_ref r;
    assert_int_equal(gw_slot_claim(seg, &r), 0);
    static const int bad[][2] = {
        {GW_SLOT_ADMITTED, GW_SLOT_RUNNING}, {GW_SLOT_ADMITTED, GW_SLOT_DONE},
        {GW_SLOT_ADMITTED, GW_SLOT_FREE},    {GW_SLOT_ADMITTED, GW_SLOT_ADMITTED},
        {GW_SLOT_QUEUED, GW_SLOT_DONE},      {GW_SLOT_QUEUED, GW_SLOT_ADMITTED},
        {GW_SLOT_RUNNING, GW_SLOT_QUEUED},   {GW_SLOT_RUNNING, GW_SLOT_FREE},
        {GW_SLOT_DONE, GW_SLOT_RUNNING},     {GW_SLOT_DONE, GW_SLOT_FREE},
        {GW_SLOT_FREE, GW_SLOT_ADMITTED},    {GW_SLOT_KILLED, GW_SLOT_DONE},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(gw_slot_move(seg, r, bad[i][0], bad[i][1]), GW_ESTATE);
    assert_int_equal(gw_slot_state(seg, r), GW_SLOT_ADMITTED);
    /* a legal transition from a state the slot is not in */
    assert_int_equal(gw_slot_move(seg, r, GW_SLOT_QUEUED, GW_SLOT_RUNNING), GW_ESTATE);
    /* a stale reference */
    struct gw_slot_ref old = {.index = r.index, .seq = r.seq - 1};
    assert_int_equal(gw_slot_move(seg, old, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), GW_ESTATE);

    /* another process (lane) may take a QUEUED slot, but may not move an
     * ADMITTED or RUNNING one it does not own */
    struct gw_segment other;
    assert_int_equal(gw_segment_attach(&other, f->path, f->err, sizeof(f->err)), 0);
    assert_int_equal(gw_lane_acquire(&other), 0);
    assert_int_equal(gw_slot_move(&other, r, GW_SLOT_ADMITTED, GW_SLOT_FAILED), GW_ESTATE);
    assert_int_equal(gw_slot_move(seg, r, GW_SLOT_ADMITTED, GW_SLOT_QUEUED), 0);
    assert_int_equal(gw_slot_move(&other, r, GW_SLOT_QUEUED, GW_SLOT_RUNNING), 0);
    assert_int_equal(gw_slot_owner(seg, r), other.lane);
    assert_int_equal(gw_slot_move(seg, r, GW_SLOT_RUNNING, GW_SLOT_KILLED), GW_ESTATE);
    assert_int_equal(gw_slot_move(&other, r, GW_SLOT_RUNNING, GW_SLOT_DONE), 0);
    assert_int_equal(gw_slot_move(&other, r, GW_SLOT_RUNNING, GW_SLOT_DONE), GW_ESTATE);
    gw_segment_close(&other);
    fx_close(f);
}

static void test_slot_claim_until_full(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_slot_ref r[16], x;
    for (int i = 0; i < 16; i++)
        assert_int_equal(gw_slot_claim(&f->seg, &r[i]), 0);
    assert_int_equal(gw_slot_claim(&f->seg, &x), GW_EFULL);
    assert_int_equal(gw_slot_move(&f->seg, r[3], GW_SLOT_ADMITTED, GW_SLOT_FAILED), 0);
    assert_int_equal(gw_budget_settle(&f->seg, r[3]), 1);
    assert_int_equal(gw_slot_release(&f->seg, r[3]), 0);
    assert_int_equal(gw_slot_claim(&f->seg, &x), 0);
    assert_int_equal(x.index, r[3].index);
    assert_int_equal(x.seq, r[3].seq + 1); /* each claim is a new incarnation */
    fx_close(f);
}

static struct gw_slot_ref ref(uint32_t i, uint32_t seq)
{
    return (struct gw_slot_ref){.index = i, .seq = seq};
}

static void test_queue_fifo_full_empty(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL); /* queue capacity 8 */
    struct gw_slot_ref out;
    assert_int_equal(gw_queue_pop(&f->seg, &out), GW_EEMPTY);
    for (uint32_t i = 0; i < 8; i++)
        assert_int_equal(gw_queue_push(&f->seg, ref(i, 100 + i)), 0);
    assert_int_equal(gw_queue_push(&f->seg, ref(9, 1)), GW_EFULL);
    assert_int_equal(gw_queue_depth(&f->seg), 8);
    for (uint32_t i = 0; i < 8; i++) {
        assert_int_equal(gw_queue_pop(&f->seg, &out), 0);
        assert_int_equal(out.index, i);
        assert_int_equal(out.seq & 0xffff, 100 + i);
    }
    assert_int_equal(gw_queue_pop(&f->seg, &out), GW_EEMPTY);
    assert_int_equal(gw_queue_push(&f->seg, ref(99999, 1)), -EINVAL); /* no such slot */
    fx_close(f);
}

static void test_queue_wraps_around(void **state)
{
    (void)state;
    struct fx *f = fx_open(NULL);
    struct gw_slot_ref out;
    uint32_t next_in = 0, next_out = 0;
    for (int lap = 0; lap < 5; lap++) { /* 5 x 6 entries through 8 cells */
        for (int i = 0; i < 6; i++, next_in++)
            assert_int_equal(gw_queue_push(&f->seg, ref(next_in % 16, next_in)), 0);
        for (int i = 0; i < 6; i++, next_out++) {
            assert_int_equal(gw_queue_pop(&f->seg, &out), 0);
            assert_int_equal(out.index, next_out % 16);
            assert_int_equal(out.seq & 0xffff, next_out);
        }
    }
    assert_int_equal(gw_queue_depth(&f->seg), 0);
    assert_int_equal(gw_queue_pop(&f->seg, &out), GW_EEMPTY);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_legal_transitions),
        cmocka_unit_test(test_slot_illegal_transitions_are_refused),
        cmocka_unit_test(test_slot_claim_until_full),
        cmocka_unit_test(test_queue_fifo_full_empty),
        cmocka_unit_test(test_queue_wraps_around),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
