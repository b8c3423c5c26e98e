// libjpeg-turbo's TurboJPEG 2.x API (Debian's libturbojpeg0-dev); it imports as it is.
#ifndef DINO_CTURBOJPEG_SHIM_H
#define DINO_CTURBOJPEG_SHIM_H
#include <turbojpeg.h>
#endif
