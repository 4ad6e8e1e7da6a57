// libhdf5's public API (Debian: libhdf5-dev; include path from pkg-config hdf5-serial), plus
// small inline helpers for what Swift cannot import: macros over globals that H5open()
// initialises (H5T_NATIVE_*, H5T_STD_REF_OBJ), macros with casts or calls (H5P_DEFAULT,
// H5S_ALL, H5F_ACC_RDONLY) and the error-stack walk (a C callback).
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(hobj_ref_t) == 8, "hobj_ref_t is expected to be a 64-bit address");

// MARK: Constants

static inline hid_t refract_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t refract_h5s_all(void) { return H5S_ALL; }

static inline hid_t refract_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t refract_h5t_native_int8(void) { return H5T_NATIVE_INT8; }
static inline hid_t refract_h5t_native_uint16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t refract_h5t_native_int16(void) { return H5T_NATIVE_INT16; }
static inline hid_t refract_h5t_native_uint32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t refract_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t refract_h5t_native_uint64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t refract_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t refract_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t refract_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
/// The stored type of old-style object references (`hobj_ref_t`), as MATLAB and h5py write them.
static inline hid_t refract_h5t_std_ref_obj(void) { return H5T_STD_REF_OBJ; }

// MARK: Files and references

/// Opens an existing file read-only with the default (sec2) driver. A user block (MATLAB's
/// 512-byte header) is skipped by the library.
static inline hid_t refract_h5f_open_readonly(const char *path) {
    return H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
}

/// Opens the object an old-style object reference points to, relative to `loc` (any object in
/// the same file). Negative on failure.
static inline hid_t refract_h5r_dereference_object(hid_t loc, const hobj_ref_t *ref) {
#if H5_VERSION_GE(1, 10, 0)
    return H5Rdereference2(loc, H5P_DEFAULT, H5R_OBJECT, ref);
#else
    return H5Rdereference(loc, H5R_OBJECT, ref);
#endif
}

/// 1 when link `index` (in name order) of group `gid` is a hard link, 0 for a soft, external or
/// user-defined link, negative on failure. Walks of the file follow hard links only: an external
/// link would make libhdf5 open another file.
static inline int refract_h5l_is_hard_by_idx(hid_t gid, hsize_t index) {
    H5L_info_t info;
    if (H5Lget_info_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, index, &info, H5P_DEFAULT) < 0) return -1;
    return info.type == H5L_TYPE_HARD ? 1 : 0;
}

/// The identity of an open object within its file (the object header's address; from HDF5 1.12
/// on, the token that replaces it), as 16 bytes. Negative on failure.
static inline herr_t refract_h5o_identity(hid_t oid, uint64_t out[2]) {
    out[0] = 0;
    out[1] = 0;
#if H5_VERSION_GE(1, 12, 0)
    H5O_info2_t info;
    if (H5Oget_info3(oid, &info, H5O_INFO_BASIC) < 0) return -1;
    memcpy(out, &info.token, sizeof(info.token) < 16 ? sizeof(info.token) : 16);
#else
    H5O_info_t info;
    if (H5Oget_info2(oid, &info, H5O_INFO_BASIC) < 0) return -1;
    out[0] = (uint64_t)info.addr;
#endif
    return 0;
}

// MARK: Errors

/// Stops the library from printing its error stack to stderr (process-wide, default stack).
static inline herr_t refract_h5e_silence(void) { return H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct {
    char *buffer;
    size_t capacity;
    size_t used;
    unsigned count;
} refract_h5e_collect_t;

static inline herr_t refract_h5e_collect_one(unsigned n, const H5E_error2_t *err, void *data) {
    (void)n;
    refract_h5e_collect_t *c = (refract_h5e_collect_t *)data;
    if (!err || !err->desc || !err->desc[0] || c->used + 1 >= c->capacity) return 0;
    int written = snprintf(c->buffer + c->used, c->capacity - c->used, "%s%s", c->count ? "; " : "", err->desc);
    if (written > 0) {
        size_t w = (size_t)written;
        c->used += (w < c->capacity - c->used) ? w : c->capacity - c->used - 1;
    }
    c->count += 1;
    return 0;
}

/// Writes the descriptions on the current error stack, outermost (API call) first, separated by
/// "; ", into `buffer` (always NUL-terminated), then clears the stack. Returns how many entries
/// there were.
static inline unsigned refract_h5e_take_messages(char *buffer, size_t capacity) {
    refract_h5e_collect_t c = {buffer, capacity, 0, 0};
    if (capacity > 0) buffer[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, refract_h5e_collect_one, &c);
    H5Eclear2(H5E_DEFAULT);
    return c.count;
}
