// libpng's simplified API; PNG_IMAGE_SIZE is a function-like macro Swift cannot import.
#ifndef DINO_CPNG_SHIM_H
#define DINO_CPNG_SHIM_H
#include <png.h>

static inline size_t dino_png_image_size(png_imagep image) { return PNG_IMAGE_SIZE(*image); }
static inline png_uint_32 dino_png_format_rgb(void) { return PNG_FORMAT_RGB; }
static inline png_uint_32 dino_png_image_version(void) { return PNG_IMAGE_VERSION; }
static inline png_uint_32 dino_png_format_gray(void) { return PNG_FORMAT_GRAY; }
static inline png_uint_32 dino_png_format_linear_y(void) { return PNG_FORMAT_LINEAR_Y; }
static inline png_uint_32 dino_png_format_rgba(void) { return PNG_FORMAT_RGBA; }
static inline png_uint_32 dino_png_format_rgb_colormap(void) { return PNG_FORMAT_RGB_COLORMAP; }
#endif
