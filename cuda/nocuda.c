/* nocuda.c - gw_cuda.h for a build without a CUDA compiler: every device
 * query fails with -ENODEV and says so, so `--device auto` falls back to the
 * CPU and `--device cuda:N` fails with a clear message. */
#include "gw_cuda.h"

#include <errno.h>
#include <stdio.h>

int gw_cuda_built(void)
{
    return 0;
}

int gw_cuda_device_count(int *count, char *err, size_t errlen)
{
    *count = 0;
    snprintf(err, errlen, "built without CUDA (no nvcc when this binary was configured)");
    return -ENODEV;
}

int gw_cuda_device_info(int dev, char *name, size_t namelen, size_t *total_mem, char *err,
                        size_t errlen)
{
    (void)namelen;
    name[0] = '\0';
    *total_mem = 0;
    snprintf(err, errlen, "cuda:%d: built without CUDA", dev);
    return -ENODEV;
}

int gw_cuda_engine_new(int dev, const gw_cuda_model *m, int n_ctx, int n_batch,
                       gw_cuda_engine **out, char *err, size_t errlen)
{
    (void)m, (void)n_ctx, (void)n_batch;
    *out = NULL;
    snprintf(err, errlen, "cuda:%d: built without CUDA (no nvcc when this binary was configured)",
             dev);
    return -ENODEV;
}

void gw_cuda_engine_free(gw_cuda_engine *e)
{
    (void)e;
}

const char *gw_cuda_engine_name(const gw_cuda_engine *e)
{
    (void)e;
    return "none";
}

void gw_cuda_engine_use_graph(gw_cuda_engine *e, int on)
{
    (void)e, (void)on;
}

int gw_cuda_engine_eval(gw_cuda_engine *e, const int *tokens, int n, int pos, float *logits,
                        int *argmax, unsigned long long *device_ns, char *err, size_t errlen)
{
    (void)e, (void)tokens, (void)n, (void)pos, (void)logits, (void)argmax, (void)device_ns;
    snprintf(err, errlen, "built without CUDA");
    return -ENODEV;
}
