/* matvec_avx512_vnni.c: matvec_avx512.c's kernels again, their integer
 * dot products by AVX512-VNNI's vpdpbusd (see there). */
#define GW_AVX512_VNNI 1
#include "matvec_avx512.c"
