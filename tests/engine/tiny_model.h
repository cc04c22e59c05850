/* tiny_model.h: a tiny llama model written by gguf_writer and loaded by the
 * engine, for the engine tests (test_forward, test_cuda). Header-only and
 * test-only: gguf_writer itself shares no code with worker/, this glue
 * needs both. Include after cmocka.h, gguf_writer.h and gw_worker.h. */
#ifndef GW_TINY_MODEL_H
#define GW_TINY_MODEL_H

#include <string.h>

struct fixture {
    gwt_llama c;
    gwt_weights w;
    gwt_buf file;
    gw_model *m;
};

/* Random weights for shape c, written as a GGUF file in memory with every
 * matrix in `type`, and loaded; a failure fails the test with the loader's
 * message. */
static void load(struct fixture *f, gwt_llama c, uint32_t type)
{
    memset(f, 0, sizeof *f);
    f->c = c;
    gwt_weights_random(&f->c, &f->w);
    gwt_write_llama(&f->c, &f->w, type, &f->file);
    gw_gguf *g;
    char err[256] = "";
    int rc = gw_gguf_open_buffer(f->file.p, f->file.len, "tiny.gguf", &g, err, sizeof err);
    if (rc == 0)
        rc = gw_model_from_gguf(g, &f->m, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
}

static void unload(struct fixture *f)
{
    gw_model_free(f->m);
    gwt_free(&f->file);
    gwt_weights_free(&f->c, &f->w);
}

#endif
