/* gw_cuda.h - the CUDA backend behind a plain C interface.
 *
 * Nothing outside cuda/ includes a CUDA header. Every function returns 0 or a
 * negative errno and, on failure, writes one line for the operator into err
 * (naming the CUDA call, the device and CUDA's own error string).
 */
#ifndef GW_CUDA_H
#define GW_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this binary was built with nvcc, 0 otherwise. */
int gw_cuda_built(void);

/* Number of usable CUDA devices in *count. Without a driver or a device this
 * returns -ENODEV and says why in err (e.g. "cudaGetDeviceCount: no CUDA-capable
 * device is detected"); a build without CUDA says "built without CUDA". */
int gw_cuda_device_count(int *count, char *err, size_t errlen);

/* Name and total memory of device `dev`. -ENODEV if it does not exist. */
int gw_cuda_device_info(int dev, char *name, size_t namelen, size_t *total_mem,
                        char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
