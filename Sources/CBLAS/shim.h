// OpenBLAS's CBLAS interface. Its enums and functions import as they are; the threading controls
// are OpenBLAS extensions declared in the same header.
#ifndef DINO_CBLAS_SHIM_H
#define DINO_CBLAS_SHIM_H
#include <cblas.h>
#endif
