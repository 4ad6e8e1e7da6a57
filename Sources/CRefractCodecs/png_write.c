/*
 * PNG encoding through libpng, into a memory buffer.
 *
 * Writes 8-bit, non-interlaced gray (1 channel), gray+alpha (2), RGB (3) or RGBA (4) from
 * interleaved rows, top to bottom, with libpng's default adaptive row filtering. No ancillary
 * chunks (no gamma, no time stamp), so the same pixels always give the same bytes.
 * Errors longjmp back here; nothing is printed.
 */
#include "refract_codecs.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

static void set_error(refract_codec_error *err, int code, const char *message) {
    if (!err) return;
    err->code = code;
    snprintf(err->message, sizeof(err->message), "%s", message);
}

typedef struct {
    refract_codec_error *err;
    uint8_t *data;
    size_t size;
    size_t capacity;
} refract_png_sink;

static void png_write_error_fn(png_structp png_ptr, png_const_charp message) {
    refract_png_sink *sink = (refract_png_sink *)png_get_error_ptr(png_ptr);
    if (sink && sink->err && sink->err->code == REFRACT_CODEC_OK) {
        set_error(sink->err, REFRACT_CODEC_CORRUPT, message ? message : "PNG error");
    }
    png_longjmp(png_ptr, 1);
}

static void png_write_warning_fn(png_structp png_ptr, png_const_charp message) {
    (void)png_ptr;
    (void)message;
}

static void sink_write(png_structp png_ptr, png_bytep data, size_t length) {
    refract_png_sink *sink = (refract_png_sink *)png_get_io_ptr(png_ptr);
    if (length > (size_t)-1 - sink->size) {
        set_error(sink->err, REFRACT_CODEC_NOMEM, "encoded PNG is too large");
        png_longjmp(png_ptr, 1);
    }
    size_t needed = sink->size + length;
    if (needed > sink->capacity) {
        size_t capacity = sink->capacity ? sink->capacity : 4096;
        while (capacity < needed) capacity = capacity > (size_t)-1 / 2 ? needed : capacity * 2;
        uint8_t *grown = (uint8_t *)realloc(sink->data, capacity);
        if (!grown) {
            set_error(sink->err, REFRACT_CODEC_NOMEM, "out of memory");
            png_longjmp(png_ptr, 1);
        }
        sink->data = grown;
        sink->capacity = capacity;
    }
    memcpy(sink->data + sink->size, data, length);
    sink->size = needed;
}

static void sink_flush(png_structp png_ptr) { (void)png_ptr; }

int refract_png_encode(const uint8_t *pixels, size_t pixels_size, uint32_t width, uint32_t height,
                       int channels, int compression_level, uint8_t **out, size_t *out_size,
                       refract_codec_error *err) {
    set_error(err, REFRACT_CODEC_OK, "");
    if (!out || !out_size) {
        set_error(err, REFRACT_CODEC_SIZE, "no output location");
        return REFRACT_CODEC_SIZE;
    }
    *out = NULL;
    *out_size = 0;
    if (channels < 1 || channels > 4) {
        set_error(err, REFRACT_CODEC_UNSUPPORTED, "PNG encoding takes 1 to 4 channels");
        return REFRACT_CODEC_UNSUPPORTED;
    }
    if (width == 0 || height == 0 || width > 0x7FFFFFFFu || height > 0x7FFFFFFFu) {
        set_error(err, REFRACT_CODEC_SIZE, "image size is not valid for PNG");
        return REFRACT_CODEC_SIZE;
    }
    const size_t stride = (size_t)width * (size_t)channels;
    if (stride / (size_t)channels != (size_t)width || (size_t)height > (size_t)-1 / stride ||
        stride * (size_t)height != pixels_size || !pixels) {
        set_error(err, REFRACT_CODEC_SIZE, "pixel buffer size does not match width*height*channels");
        return REFRACT_CODEC_SIZE;
    }
    if (compression_level < 0 || compression_level > 9) {
        set_error(err, REFRACT_CODEC_UNSUPPORTED, "compression level must be 0...9");
        return REFRACT_CODEC_UNSUPPORTED;
    }
    refract_png_sink *sink = (refract_png_sink *)calloc(1, sizeof(refract_png_sink));
    if (!sink) {
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    sink->err = err;

    png_structp png_ptr = png_create_write_struct(PNG_LIBPNG_VER_STRING, sink, png_write_error_fn,
                                                  png_write_warning_fn);
    if (!png_ptr) {
        free(sink);
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    png_infop info_ptr = png_create_info_struct(png_ptr);
    if (!info_ptr) {
        png_destroy_write_struct(&png_ptr, NULL);
        free(sink);
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    /* Everything below may longjmp back here. Only `sink` (allocated before) is touched after. */
    if (setjmp(png_jmpbuf(png_ptr))) {
        png_destroy_write_struct(&png_ptr, &info_ptr);
        int code = (err && err->code != REFRACT_CODEC_OK) ? err->code : REFRACT_CODEC_CORRUPT;
        if (err && err->code == REFRACT_CODEC_OK) set_error(err, code, "PNG error");
        free(sink->data);
        free(sink);
        return code;
    }
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                       PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_write_fn(png_ptr, sink, sink_write, sink_flush);
    png_set_user_limits(png_ptr, 0x7FFFFFFFu, 0x7FFFFFFFu);
    png_set_compression_level(png_ptr, compression_level);
    png_set_IHDR(png_ptr, info_ptr, width, height, 8, color_types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png_ptr, info_ptr);
    for (uint32_t y = 0; y < height; y++) {
        png_write_row(png_ptr, (png_const_bytep)(pixels + (size_t)y * stride));
    }
    png_write_end(png_ptr, NULL);
    png_destroy_write_struct(&png_ptr, &info_ptr);

    *out = sink->data;
    *out_size = sink->size;
    free(sink);
    return REFRACT_CODEC_OK;
}

void refract_png_free(uint8_t *buffer) { free(buffer); }
