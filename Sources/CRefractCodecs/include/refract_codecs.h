#ifndef REFRACT_CODECS_H
#define REFRACT_CODECS_H
/* Placeholder header; filled in by the image-codec work. */
int refract_codecs_version(void);
#endif
