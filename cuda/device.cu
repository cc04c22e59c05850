/* device.cu - device discovery through the CUDA runtime. */
#include "gw_cuda.h"

#include <cuda_runtime.h>
#include <errno.h>
#include <stdio.h>

extern "C" int gw_cuda_built(void)
{
    return 1;
}

extern "C" int gw_cuda_device_count(int *count, char *err, size_t errlen)
{
    *count = 0;
    cudaError_t rc = cudaGetDeviceCount(count);
    if (rc != cudaSuccess) {
        snprintf(err, errlen, "cudaGetDeviceCount: %s", cudaGetErrorString(rc));
        *count = 0;
        return -ENODEV;
    }
    if (*count == 0) {
        snprintf(err, errlen, "cudaGetDeviceCount: no CUDA device");
        return -ENODEV;
    }
    return 0;
}

extern "C" int gw_cuda_device_info(int dev, char *name, size_t namelen, size_t *total_mem,
                                   char *err, size_t errlen)
{
    cudaDeviceProp prop;
    cudaError_t rc = cudaGetDeviceProperties(&prop, dev);
    name[0] = '\0';
    *total_mem = 0;
    if (rc != cudaSuccess) {
        snprintf(err, errlen, "cudaGetDeviceProperties(cuda:%d): %s", dev, cudaGetErrorString(rc));
        return -ENODEV;
    }
    snprintf(name, namelen, "%s", prop.name);
    *total_mem = prop.totalGlobalMem;
    return 0;
}
