/*
 * JPEG decoding through libjpeg-turbo, matching Pillow's `Image.open(f).convert("RGB")`.
 *
 * Pillow maps the component count to a mode (1 -> "L", 3 -> "RGB", 4 -> "CMYK" read as
 * inverted "CMYK;I") and leaves every other libjpeg setting at its default: islow DCT,
 * fancy upsampling, block smoothing. We do the same, then apply Pillow's L->RGB and
 * CMYK->RGB conversions. Errors longjmp back here; libjpeg never prints or exits.
 */
#include "refract_codecs.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    refract_codec_error *err;
} refract_jpeg_error_mgr;

typedef struct {
    struct jpeg_source_mgr pub;
    int truncated; /* set once libjpeg asked for bytes past the end of the buffer */
} refract_jpeg_source;

static const JOCTET refract_fake_eoi[2] = {0xFF, (JOCTET)JPEG_EOI};

static void set_error(refract_codec_error *err, int code, const char *message) {
    if (!err) return;
    err->code = code;
    snprintf(err->message, sizeof(err->message), "%s", message);
}

/* Error codes from libjpeg that mean "valid but not supported" rather than "broken". */
static int is_unsupported_code(int msg_code) {
    switch (msg_code) {
    case JERR_BAD_PRECISION:
    case JERR_SOF_UNSUPPORTED:
    case JERR_NOT_COMPILED:
    case JERR_CONVERSION_NOTIMPL:
    case JERR_COMPONENT_COUNT:
    case JERR_IMAGE_TOO_BIG:
    case JERR_WIDTH_OVERFLOW:
        return 1;
    default:
        return 0;
    }
}

static void refract_error_exit(j_common_ptr cinfo) {
    refract_jpeg_error_mgr *mgr = (refract_jpeg_error_mgr *)cinfo->err;
    char buffer[JMSG_LENGTH_MAX];
    buffer[0] = 0;
    (*cinfo->err->format_message)(cinfo, buffer);
    set_error(mgr->err, is_unsupported_code(cinfo->err->msg_code) ? REFRACT_CODEC_UNSUPPORTED
                                                                   : REFRACT_CODEC_CORRUPT,
              buffer);
    longjmp(mgr->jump, 1);
}

/* Silence: warnings and trace messages are counted (libjpeg does that) but never printed. */
static void refract_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void refract_emit_message(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0) cinfo->err->num_warnings++;
}

static void source_init(j_decompress_ptr cinfo) { (void)cinfo; }

static boolean source_fill(j_decompress_ptr cinfo) {
    refract_jpeg_source *src = (refract_jpeg_source *)cinfo->src;
    /* Past the end: remember it, and feed an EOI marker so libjpeg can wind down cleanly. */
    src->truncated = 1;
    src->pub.next_input_byte = refract_fake_eoi;
    src->pub.bytes_in_buffer = 2;
    return TRUE;
}

static void source_skip(j_decompress_ptr cinfo, long num_bytes) {
    refract_jpeg_source *src = (refract_jpeg_source *)cinfo->src;
    if (num_bytes <= 0) return;
    while ((size_t)num_bytes > src->pub.bytes_in_buffer) {
        num_bytes -= (long)src->pub.bytes_in_buffer;
        (void)source_fill(cinfo);
    }
    src->pub.next_input_byte += num_bytes;
    src->pub.bytes_in_buffer -= (size_t)num_bytes;
}

static void source_term(j_decompress_ptr cinfo) { (void)cinfo; }

typedef struct {
    struct jpeg_decompress_struct cinfo;
    refract_jpeg_error_mgr jerr;
    refract_jpeg_source src;
    int created;
    JSAMPLE *row; /* scratch scanline for CMYK input */
} refract_jpeg_context;

static void context_init(refract_jpeg_context *ctx, const uint8_t *data, size_t size,
                         refract_codec_error *err) {
    memset(ctx, 0, sizeof(*ctx));
    ctx->cinfo.err = jpeg_std_error(&ctx->jerr.pub);
    ctx->jerr.pub.error_exit = refract_error_exit;
    ctx->jerr.pub.output_message = refract_output_message;
    ctx->jerr.pub.emit_message = refract_emit_message;
    ctx->jerr.err = err;
    ctx->src.pub.init_source = source_init;
    ctx->src.pub.fill_input_buffer = source_fill;
    ctx->src.pub.skip_input_data = source_skip;
    ctx->src.pub.resync_to_restart = jpeg_resync_to_restart;
    ctx->src.pub.term_source = source_term;
    ctx->src.pub.next_input_byte = (const JOCTET *)data;
    ctx->src.pub.bytes_in_buffer = size;
}

static void context_destroy(refract_jpeg_context *ctx) {
    if (ctx->created) jpeg_destroy_decompress(&ctx->cinfo);
    ctx->created = 0;
    free(ctx->row);
    ctx->row = NULL;
}

/* Abandons decoding with our own message (jumps to the setjmp in the caller). */
static void fail(refract_jpeg_context *ctx, int code, const char *message) {
    set_error(ctx->jerr.err, code, message);
    longjmp(ctx->jerr.jump, 1);
}

/* Reads markers up to the first image (skipping table-only datastreams, as Pillow does). */
static void read_header(refract_jpeg_context *ctx) {
    int rc = jpeg_read_header(&ctx->cinfo, FALSE);
    int guard = 0;
    while (rc == JPEG_HEADER_TABLES_ONLY && guard++ < 64) rc = jpeg_read_header(&ctx->cinfo, FALSE);
    if (rc != JPEG_HEADER_OK) ERREXIT(&ctx->cinfo, JERR_NO_IMAGE);
}

/* After a longjmp: a premature end of input explains most downstream errors. */
static int finish_error(refract_jpeg_context *ctx, refract_codec_error *err) {
    if (ctx->src.truncated) {
        set_error(err, REFRACT_CODEC_TRUNCATED, "file ends before the image data is complete");
    }
    context_destroy(ctx);
    return err ? err->code : REFRACT_CODEC_CORRUPT;
}

int refract_jpeg_probe(const uint8_t *data, size_t size, refract_image_info *info,
                       refract_codec_error *err) {
    refract_jpeg_context *ctx = (refract_jpeg_context *)malloc(sizeof(refract_jpeg_context));
    if (!ctx) {
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    set_error(err, REFRACT_CODEC_OK, "");
    context_init(ctx, data, size, err);
    if (setjmp(ctx->jerr.jump)) {
        int code = finish_error(ctx, err);
        free(ctx);
        return code;
    }
    jpeg_create_decompress(&ctx->cinfo);
    ctx->created = 1;
    ctx->cinfo.src = &ctx->src.pub;
    read_header(ctx);
    if (info) {
        info->width = ctx->cinfo.image_width;
        info->height = ctx->cinfo.image_height;
        info->channels = ctx->cinfo.num_components;
        info->bit_depth = ctx->cinfo.data_precision;
        info->progressive = ctx->cinfo.progressive_mode ? 1 : 0;
    }
    int code = REFRACT_CODEC_OK;
    if (ctx->cinfo.num_components != 1 && ctx->cinfo.num_components != 3 &&
        ctx->cinfo.num_components != 4) {
        char msg[96];
        snprintf(msg, sizeof(msg), "JPEG with %d components is not supported (Pillow reads 1, 3 or 4)",
                 ctx->cinfo.num_components);
        set_error(err, REFRACT_CODEC_UNSUPPORTED, msg);
        code = REFRACT_CODEC_UNSUPPORTED;
    } else if (ctx->src.truncated) {
        set_error(err, REFRACT_CODEC_TRUNCATED, "file ends inside the JPEG header");
        code = REFRACT_CODEC_TRUNCATED;
    }
    context_destroy(ctx);
    free(ctx);
    return code;
}

/* Pillow's CMYK->RGB on "CMYK;I" data (inverted on read): with raw samples c and k,
   R = round(c * k / 255), computed exactly by the usual (t + (t >> 8)) >> 8 trick. */
static inline uint8_t mul_div_255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

int refract_jpeg_decode(const uint8_t *data, size_t size, uint8_t *out, size_t out_size,
                        uint32_t width, uint32_t height, refract_codec_error *err) {
    refract_jpeg_context *ctx = (refract_jpeg_context *)malloc(sizeof(refract_jpeg_context));
    if (!ctx) {
        set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
        return REFRACT_CODEC_NOMEM;
    }
    set_error(err, REFRACT_CODEC_OK, "");
    context_init(ctx, data, size, err);
    if (setjmp(ctx->jerr.jump)) {
        int code = finish_error(ctx, err);
        free(ctx);
        return code;
    }
    jpeg_create_decompress(&ctx->cinfo);
    ctx->created = 1;
    ctx->cinfo.src = &ctx->src.pub;
    read_header(ctx);

    struct jpeg_decompress_struct *cinfo = &ctx->cinfo;
    if (cinfo->image_width != width || cinfo->image_height != height ||
        (size_t)width * (size_t)height * 3u != out_size) {
        set_error(err, REFRACT_CODEC_SIZE, "declared JPEG size does not match the output buffer");
        context_destroy(ctx);
        free(ctx);
        return REFRACT_CODEC_SIZE;
    }
    int components = cinfo->num_components;
    switch (components) {
    case 1: cinfo->out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo->out_color_space = JCS_RGB; break;
    case 4: cinfo->out_color_space = JCS_CMYK; break;
    default: {
        char msg[96];
        snprintf(msg, sizeof(msg), "JPEG with %d components is not supported (Pillow reads 1, 3 or 4)",
                 components);
        set_error(err, REFRACT_CODEC_UNSUPPORTED, msg);
        context_destroy(ctx);
        free(ctx);
        return REFRACT_CODEC_UNSUPPORTED;
    }
    }
    /* Pillow's settings (libjpeg defaults, stated explicitly). */
    cinfo->dct_method = JDCT_ISLOW;
    cinfo->do_fancy_upsampling = TRUE;
    cinfo->do_block_smoothing = TRUE;
    cinfo->scale_num = 1;
    cinfo->scale_denom = 1;

    jpeg_start_decompress(cinfo);
    if (cinfo->output_width != width || cinfo->output_height != height ||
        cinfo->output_components != components) {
        fail(ctx, REFRACT_CODEC_UNSUPPORTED, "libjpeg output layout differs from the header");
    }

    const size_t stride = (size_t)width * 3u;
    if (components == 3) {
        while (cinfo->output_scanline < cinfo->output_height) {
            JSAMPROW rowp = out + (size_t)cinfo->output_scanline * stride;
            if (jpeg_read_scanlines(cinfo, &rowp, 1) != 1) fail(ctx, REFRACT_CODEC_CORRUPT, "libjpeg returned no scanline");
        }
    } else {
        ctx->row = (JSAMPLE *)malloc((size_t)width * (size_t)components);
        if (!ctx->row) {
            set_error(err, REFRACT_CODEC_NOMEM, "out of memory");
            context_destroy(ctx);
            free(ctx);
            return REFRACT_CODEC_NOMEM;
        }
        while (cinfo->output_scanline < cinfo->output_height) {
            uint8_t *dst = out + (size_t)cinfo->output_scanline * stride;
            JSAMPROW rowp = ctx->row;
            if (jpeg_read_scanlines(cinfo, &rowp, 1) != 1) fail(ctx, REFRACT_CODEC_CORRUPT, "libjpeg returned no scanline");
            const JSAMPLE *s = ctx->row;
            if (components == 1) {
                for (uint32_t x = 0; x < width; x++, dst += 3) dst[0] = dst[1] = dst[2] = s[x];
            } else {
                for (uint32_t x = 0; x < width; x++, dst += 3, s += 4) {
                    dst[0] = mul_div_255(s[0], s[3]);
                    dst[1] = mul_div_255(s[1], s[3]);
                    dst[2] = mul_div_255(s[2], s[3]);
                }
            }
        }
    }
    /* Pillow also finishes the datastream (reads through EOI), so a missing tail is an error. */
    jpeg_finish_decompress(cinfo);
    int code = REFRACT_CODEC_OK;
    if (ctx->src.truncated) {
        set_error(err, REFRACT_CODEC_TRUNCATED, "file ends before the image data is complete");
        code = REFRACT_CODEC_TRUNCATED;
    }
    context_destroy(ctx);
    free(ctx);
    return code;
}

int refract_jpeg_library_version(void) {
#ifdef LIBJPEG_TURBO_VERSION_NUMBER
    return LIBJPEG_TURBO_VERSION_NUMBER;
#else
    return JPEG_LIB_VERSION;
#endif
}
