// libhdf5's public API (Debian: libhdf5-dev; include path from pkg-config hdf5-serial).
#include <hdf5.h>
