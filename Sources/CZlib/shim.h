// zlib (Debian: zlib1g-dev; macOS: in the SDK), for HDF5's deflate filter.
#include <zlib.h>
