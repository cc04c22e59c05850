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
