#include "refract_codecs.h"
int refract_codecs_version(void) { return 1; }
