/*
 * PNG decoding through libpng, matching Pillow's `Image.open(f).convert("RGB")`.
 *
 * Pillow's conventions (verified against Pillow 13, see docs/Images.md):
 *   - alpha (RGBA, gray+alpha, tRNS) is dropped, never composited;
 *   - 16-bit RGB/RGBA/gray+alpha keep the high byte of each sample;
 *   - 16-bit gray opens as mode "I;16" and converts to RGB by clipping: min(v, 255);
 *   - gray at 1/2/4 bits is scaled to 0..255 (x * 255 / (2^bits - 1));
 *   - palette indices past the end of PLTE read as black;
 *   - chunk CRCs are not enforced, and a file whose image rows are all present decodes even
 *     if the tail (rest of the zlib stream, IEND) is missing; missing rows are an error.
 *
 * libpng's progressive reader is used so that "all rows arrived" is observable when the
 * buffer runs out. Errors longjmp back here; nothing is printed.
 */
#include "refract_codecs.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

static const uint8_t png_signature_bytes[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

static void set_error(refract_codec_error *err, int code, const char *message) {
    if (!err) return;
    err->code = code;
    snprintf(err->message, sizeof(err->message), "%s", message);
}

static uint32_t read_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

int refract_png_probe(const uint8_t *data, size_t size, refract_image_info *info,
                      refract_codec_error *err) {
    set_error(err, REFRACT_CODEC_OK, "");
    if (size < 8 || memcmp(data, png_signature_bytes, 8) != 0) {
        set_error(err, REFRACT_CODEC_CORRUPT, "missing PNG signature");
        return REFRACT_CODEC_CORRUPT;
    }
    /* Signature (8), IHDR length (4) + type (4) + 13 bytes of data. */
    if (size < 8 + 8 + 13) {
        set_error(err, REFRACT_CODEC_TRUNCATED, "file ends inside the PNG header");
        return REFRACT_CODEC_TRUNCATED;
    }
    const uint8_t *chunk = data + 8;
    if (read_be32(chunk) != 13 || memcmp(chunk + 4, "IHDR", 4) != 0) {
        set_error(err, REFRACT_CODEC_CORRUPT, "PNG does not start with a valid IHDR chunk");
        return REFRACT_CODEC_CORRUPT;
    }
    const uint8_t *ihdr = chunk + 8;
    uint32_t width = read_be32(ihdr), height = read_be32(ihdr + 4);
    int depth = ihdr[8], color = ihdr[9], interlace = ihdr[12];
    if (width == 0 || height == 0 || width > 0x7FFFFFFFu || height > 0x7FFFFFFFu) {
        set_error(err, REFRACT_CODEC_CORRUPT, "PNG header declares an invalid size");
        return REFRACT_CODEC_CORRUPT;
    }
    int channels;
    int depth_ok;
    switch (color) {
    case 0: channels = 1; depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16; break;
    case 2: channels = 3; depth_ok = depth == 8 || depth == 16; break;
    case 3: channels = 3; depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8; break;
    case 4: channels = 2; depth_ok = depth == 8 || depth == 16; break;
    case 6: channels = 4; depth_ok = depth == 8 || depth == 16; break;
    default: channels = 0; depth_ok = 0; break;
    }
    if (!depth_ok || interlace > 1 || ihdr[10] != 0 || ihdr[11] != 0) {
        set_error(err, REFRACT_CODEC_CORRUPT, "PNG header has an invalid colour type, bit depth or method");
        return REFRACT_CODEC_CORRUPT;
    }
    if (info) {
        info->width = width;
        info->height = height;
        info->channels = channels;
        info->bit_depth = depth;
        info->progressive = interlace;
    }
    return REFRACT_CODEC_OK;
}

typedef struct {
    refract_codec_error *err;
    uint8_t *out;
    uint32_t width, height;
    int interlaced;
    int gray16;          /* 16-bit gray kept wide, clipped to 255 like Pillow's I;16 -> RGB */
    int channels;        /* after libpng transforms */
    size_t rowbytes;     /* after libpng transforms */
    uint8_t *full;       /* interlaced: whole transformed image, combined pass by pass */
    uint32_t rows_done;  /* non-interlaced: rows delivered */
    int complete;        /* every image row delivered */
    int ended;           /* IEND reached */
    int info_seen;
    char warning[REFRACT_CODEC_MESSAGE_MAX]; /* first libpng warning / benign error */
} refract_png_context;

static void png_error_fn(png_structp png_ptr, png_const_charp message) {
    refract_png_context *ctx = (refract_png_context *)png_get_error_ptr(png_ptr);
    if (ctx && ctx->err && ctx->err->code == REFRACT_CODEC_OK) {
        set_error(ctx->err, REFRACT_CODEC_CORRUPT, message ? message : "PNG error");
    }
    png_longjmp(png_ptr, 1);
}

static void png_warning_fn(png_structp png_ptr, png_const_charp message) {
    refract_png_context *ctx = (refract_png_context *)png_get_error_ptr(png_ptr);
    if (ctx && !ctx->warning[0] && message) snprintf(ctx->warning, sizeof(ctx->warning), "%s", message);
}

static void convert_row(const refract_png_context *ctx, const uint8_t *src, uint8_t *dst) {
    const uint32_t w = ctx->width;
    if (ctx->gray16) {
        const int step = ctx->channels * 2;
        for (uint32_t x = 0; x < w; x++, src += step, dst += 3) {
            unsigned v = ((unsigned)src[0] << 8) | src[1];
            uint8_t g = v > 255 ? 255 : (uint8_t)v;
            dst[0] = dst[1] = dst[2] = g;
        }
        return;
    }
    switch (ctx->channels) {
    case 1:
        for (uint32_t x = 0; x < w; x++, dst += 3) dst[0] = dst[1] = dst[2] = src[x];
        break;
    case 2:
        for (uint32_t x = 0; x < w; x++, src += 2, dst += 3) dst[0] = dst[1] = dst[2] = src[0];
        break;
    case 3:
        memcpy(dst, src, (size_t)w * 3u);
        break;
    default:
        for (uint32_t x = 0; x < w; x++, src += 4, dst += 3) {
            dst[0] = src[0];
            dst[1] = src[1];
            dst[2] = src[2];
        }
        break;
    }
}

static void info_callback(png_structp png_ptr, png_infop info_ptr) {
    refract_png_context *ctx = (refract_png_context *)png_get_progressive_ptr(png_ptr);
    /* libpng's progressive reader calls this again when a second IHDR follows the first image's
       IDAT chunks. Only the first image is read (as Pillow does); setting up again would leak
       the interlace buffer and re-run the transforms on a reader already past its header. */
    if (ctx->info_seen) {
        set_error(ctx->err, REFRACT_CODEC_CORRUPT, "PNG has a second image header (IHDR) after the image data");
        png_longjmp(png_ptr, 1);
    }
    png_uint_32 width = 0, height = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(png_ptr, info_ptr, &width, &height, &depth, &color, &interlace, NULL, NULL);
    if (width != ctx->width || height != ctx->height) {
        set_error(ctx->err, REFRACT_CODEC_SIZE, "declared PNG size does not match the output buffer");
        png_longjmp(png_ptr, 1);
    }
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png_ptr);
    } else if (color == PNG_COLOR_TYPE_GRAY && depth < 8) {
        png_set_expand_gray_1_2_4_to_8(png_ptr);
    }
    ctx->gray16 = (color == PNG_COLOR_TYPE_GRAY && depth == 16);
    if (depth == 16 && !ctx->gray16) png_set_strip_16(png_ptr); /* high byte, like Pillow */
    ctx->interlaced = interlace != PNG_INTERLACE_NONE;
    (void)png_set_interlace_handling(png_ptr);
    png_read_update_info(png_ptr, info_ptr);
    ctx->channels = png_get_channels(png_ptr, info_ptr);
    ctx->rowbytes = png_get_rowbytes(png_ptr, info_ptr);
    int out_depth = png_get_bit_depth(png_ptr, info_ptr);
    size_t needed = (size_t)width * (size_t)ctx->channels * (size_t)(out_depth / 8);
    if (ctx->channels < 1 || ctx->channels > 4 || (out_depth != 8 && out_depth != 16) ||
        (out_depth == 16) != (ctx->gray16 != 0) || ctx->rowbytes < needed) {
        set_error(ctx->err, REFRACT_CODEC_UNSUPPORTED, "unexpected PNG pixel layout after expansion");
        png_longjmp(png_ptr, 1);
    }
    if (ctx->interlaced) {
        ctx->full = (uint8_t *)calloc(height, ctx->rowbytes);
        if (!ctx->full) {
            set_error(ctx->err, REFRACT_CODEC_NOMEM, "out of memory");
            png_longjmp(png_ptr, 1);
        }
    }
    ctx->info_seen = 1;
}

static void row_callback(png_structp png_ptr, png_bytep new_row, png_uint_32 row_num, int pass) {
    refract_png_context *ctx = (refract_png_context *)png_get_progressive_ptr(png_ptr);
    if (row_num >= ctx->height) return;
    if (ctx->interlaced) {
        if (new_row) png_progressive_combine_row(png_ptr, ctx->full + (size_t)row_num * ctx->rowbytes, new_row);
        if (pass == 6 && row_num == ctx->height - 1) ctx->complete = 1;
    } else {
        if (!new_row) return;
        convert_row(ctx, new_row, ctx->out + (size_t)row_num * (size_t)ctx->width * 3u);
        ctx->rows_done++;
        if (row_num == ctx->height - 1) ctx->complete = 1;
    }
}

static void end_callback(png_structp png_ptr, png_infop info_ptr) {
    (void)info_ptr;
    refract_png_context *ctx = (refract_png_context *)png_get_progressive_ptr(png_ptr);
    ctx->ended = 1;
}

int refract_png_decode(const uint8_t *data, size_t size, uint8_t *out, size_t out_size,
                       uint32_t width, uint32_t height, refract_codec_error *err) {
    set_error(err, REFRACT_CODEC_OK, "");
    if ((size_t)width * (size_t)height * 3u != out_size) {
        set_error(err, REFRACT_CODEC_SIZE, "declared PNG size does not match the output buffer");
        return REFRACT_CODEC_SIZE;
    }
    refract_png_context *ctx = (refract_png_context *)calloc(1, sizeof(refract_png_context));
    if (!ctx) {
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    ctx->err = err;
    ctx->out = out;
    ctx->width = width;
    ctx->height = height;

    png_structp png_ptr = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, png_error_fn, png_warning_fn);
    if (!png_ptr) {
        free(ctx);
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    png_infop info_ptr = png_create_info_struct(png_ptr);
    if (!info_ptr) {
        png_destroy_read_struct(&png_ptr, NULL, NULL);
        free(ctx);
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    /* Everything below may longjmp back here. An error raised after every row has arrived
       (adler-32, chunk CRC, trailing chunks) is ignored, as Pillow stops reading there. */
    if (setjmp(png_jmpbuf(png_ptr))) {
        if (!ctx->complete) {
            png_destroy_read_struct(&png_ptr, &info_ptr, NULL);
            int code = (err && err->code != REFRACT_CODEC_OK) ? err->code : REFRACT_CODEC_CORRUPT;
            if (err && err->code == REFRACT_CODEC_OK) set_error(err, code, "PNG error");
            free(ctx->full);
            free(ctx);
            return code;
        }
        set_error(err, REFRACT_CODEC_OK, "");
    } else {
        png_set_crc_action(png_ptr, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
        png_set_benign_errors(png_ptr, 1);
        png_set_user_limits(png_ptr, width, height);
        png_set_progressive_read_fn(png_ptr, ctx, info_callback, row_callback, end_callback);
        png_process_data(png_ptr, info_ptr, (png_bytep)data, size);
    }

    int code = REFRACT_CODEC_OK;
    if (!ctx->info_seen || !ctx->complete) {
        /* Rows are missing. If libpng complained on the way (bad zlib data is only a "benign"
           error for libpng), the file is broken rather than cut short. */
        if (ctx->warning[0]) {
            set_error(err, REFRACT_CODEC_CORRUPT, ctx->warning);
            code = REFRACT_CODEC_CORRUPT;
        } else {
            set_error(err, REFRACT_CODEC_TRUNCATED, "file ends before the image data is complete");
            code = REFRACT_CODEC_TRUNCATED;
        }
    } else if (ctx->interlaced) {
        for (uint32_t y = 0; y < height; y++) {
            convert_row(ctx, ctx->full + (size_t)y * ctx->rowbytes, out + (size_t)y * (size_t)width * 3u);
        }
    }
    png_destroy_read_struct(&png_ptr, &info_ptr, NULL);
    free(ctx->full);
    free(ctx);
    return code;
}

const char *refract_png_library_version(void) { return png_get_libpng_ver(NULL); }
