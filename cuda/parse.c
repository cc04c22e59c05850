/* parse.c - device names, the same with and without nvcc. */
#include "gw_cuda.h"

#include <errno.h>

int gw_cuda_parse_device(const char *spec, int *dev)
{
    if (!spec || spec[0] != 'c' || spec[1] != 'u' || spec[2] != 'd' || spec[3] != 'a' ||
        spec[4] != ':')
        return -EINVAL;
    const char *p = spec + 5;
    int n = 0, digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
        n = n * 10 + (*p - '0');
    if (digits == 0 || digits > 2 || *p != '\0' || n > 63 || (digits == 2 && spec[5] == '0'))
        return -EINVAL;
    *dev = n;
    return 0;
}
