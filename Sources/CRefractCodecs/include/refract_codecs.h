#ifndef REFRACT_CODECS_H
#define REFRACT_CODECS_H

/*
 * Thin C shim over libjpeg-turbo and libpng for Refract.
 *
 * Both decoders read from a memory buffer and write 8-bit interleaved RGB (HWC) into a
 * caller-provided buffer, converting the way Pillow's `Image.open(f).convert("RGB")` does
 * (see docs/Images.md). Errors never abort, exit or print: every entry point returns a
 * status code and fills `refract_codec_error` with a message.
 *
 * Usage: call the `*_probe` function first (header only, no pixel allocation), check the
 * declared size against your limit, allocate width*height*3 bytes, then call `*_decode`.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
enum {
    REFRACT_CODEC_OK = 0,
    REFRACT_CODEC_TRUNCATED = 1,   /* input ended before the image data was complete */
    REFRACT_CODEC_CORRUPT = 2,     /* malformed data reported by the codec library */
    REFRACT_CODEC_UNSUPPORTED = 3, /* valid file, but a variant Pillow/Refract cannot decode */
    REFRACT_CODEC_SIZE = 4,        /* declared dimensions disagree with the output buffer */
    REFRACT_CODEC_NOMEM = 5        /* allocation failed */
};

#define REFRACT_CODEC_MESSAGE_MAX 256

typedef struct {
    int code;
    char message[REFRACT_CODEC_MESSAGE_MAX];
} refract_codec_error;

/* Header facts. `channels` is the number of colour channels as stored in the file
   (JPEG: components; PNG: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA, palette reports 3).
   `bit_depth` is 8 for JPEG; the PNG sample depth otherwise. */
typedef struct {
    uint32_t width;
    uint32_t height;
    int channels;
    int bit_depth;
    int progressive; /* JPEG: progressive/multi-scan; PNG: Adam7 interlaced */
} refract_image_info;

/* JPEG (libjpeg-turbo). Reads markers up to the first scan only. */
int refract_jpeg_probe(const uint8_t *data, size_t size, refract_image_info *info,
                       refract_codec_error *err);

/* Decodes a JPEG into `out` (exactly width*height*3 bytes, `out_size` checked). */
int refract_jpeg_decode(const uint8_t *data, size_t size, uint8_t *out, size_t out_size,
                        uint32_t width, uint32_t height, refract_codec_error *err);

/* PNG (libpng). The probe parses the signature and IHDR only. */
int refract_png_probe(const uint8_t *data, size_t size, refract_image_info *info,
                      refract_codec_error *err);

/* Decodes a PNG into `out` (exactly width*height*3 bytes, `out_size` checked). */
int refract_png_decode(const uint8_t *data, size_t size, uint8_t *out, size_t out_size,
                       uint32_t width, uint32_t height, refract_codec_error *err);

/* Encodes 8-bit interleaved pixels (rows top to bottom; `channels` 1 gray, 2 gray+alpha,
   3 RGB, 4 RGBA; `pixels_size` must be width*height*channels) as a non-interlaced PNG with
   zlib `compression_level` 0...9. On success `*out` holds `*out_size` bytes allocated here;
   release them with `refract_png_free`. On failure `*out` is NULL and nothing is allocated. */
int refract_png_encode(const uint8_t *pixels, size_t pixels_size, uint32_t width, uint32_t height,
                       int channels, int compression_level, uint8_t **out, size_t *out_size,
                       refract_codec_error *err);
void refract_png_free(uint8_t *buffer);

/* Library versions linked at run time, for diagnostics ("libjpeg-turbo 2.1.5", "1.6.39"). */
const char *refract_png_library_version(void);
int refract_jpeg_library_version(void);

#ifdef __cplusplus
}
#endif

#endif /* REFRACT_CODECS_H */
