/* Internal helpers shared by the files of the data layer. */
#ifndef FEDC_DATA_INTERNAL_H
#define FEDC_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

#include "fedc/data.h"

/* zlib's message for the last error on gz, without the leading path that
 * zlib adds (our messages name the file already). */
const char *fedc__gz_message(gzFile gz, const char *path);

/* Like fedc_dataset_create, but leaves x and y uninitialised when `zero` is
 * 0, for readers that overwrite every element anyway. */
int fedc__dataset_alloc(size_t n, int channels, int height, int width, int num_classes, int zero,
                        fedc_dataset **out, char *err, size_t errlen);

/* 1 if every feature of d is exactly k/255.0f for an integer k in [0, 255],
 * so the images can be stored as unsigned bytes without loss. */
int fedc__dataset_is_u8(const fedc_dataset *d);

/* Write the examples idx[0..count) of d (all of d when idx is NULL, and
 * count is then ignored) as an IDX image or label file. Images are stored
 * as unsigned bytes when as_u8 is nonzero (the caller checked
 * fedc__dataset_is_u8), else as float32. The path decides compression as
 * in fedc_dataset_save_idx. */
int fedc__idx_write_images(const char *path, const fedc_dataset *d, const uint32_t *idx, size_t count,
                           int as_u8, char *err, size_t errlen);
int fedc__idx_write_labels(const char *path, const fedc_dataset *d, const uint32_t *idx, size_t count,
                           char *err, size_t errlen);

/* "dir/name" in a new buffer the caller frees, or NULL when out of memory. */
char *fedc__path_join(const char *dir, const char *name);

/* 1 if path names an existing file or directory. */
int fedc__path_exists(const char *path);

/* Creates dir and any missing parents (like mkdir -p). */
int fedc__mkdirs(const char *dir, char *err, size_t errlen);

#endif /* FEDC_DATA_INTERNAL_H */
