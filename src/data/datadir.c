/* Data directories: a train and a test split under well-known file names. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"

/* Returns "dir/name" if it exists, else "dir/name.gz" if that exists, else
 * NULL (also when out of memory, which the caller then reports as absent;
 * the next allocation will fail loudly). */
static char *find_file(const char *dir, const char *name)
{
    char *p = fedc__path_join(dir, name);
    if (!p || fedc__path_exists(p)) return p;
    size_t len = strlen(p);
    char *gz = realloc(p, len + 4);
    if (!gz) {
        free(p);
        return NULL;
    }
    memcpy(gz + len, ".gz", 4);
    if (fedc__path_exists(gz)) return gz;
    free(gz);
    return NULL;
}

int fedc_dataset_load_dir(const char *dir, const char *split, fedc_dataset **out, char *err, size_t errlen)
{
    char *images = NULL, *labels = NULL, *csv = NULL;
    int rc;
    struct stat st;

    *out = NULL;
    if (!dir || !split)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no data directory or split given");
    const char *prefix;
    if (strcmp(split, "train") == 0)
        prefix = "train";
    else if (strcmp(split, "test") == 0)
        prefix = "t10k";
    else
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "unknown data split '%s' (expected \"train\" or \"test\")", split);
    if (stat(dir, &st) != 0)
        return fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO,
                              "cannot open data directory '%s': %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fedc_set_error(err, errlen, FEDC_ERR_NOTFOUND, "data directory '%s' is not a directory", dir);

    char images_name[64], labels_name[64], csv_name[64];
    snprintf(images_name, sizeof images_name, "%s-images-idx3-ubyte", prefix);
    snprintf(labels_name, sizeof labels_name, "%s-labels-idx1-ubyte", prefix);
    snprintf(csv_name, sizeof csv_name, "%s.csv", split);

    images = find_file(dir, images_name);
    labels = find_file(dir, labels_name);
    if (images && labels) {
        rc = fedc_dataset_load_idx(images, labels, out, err, errlen);
        goto done;
    }
    if (images || labels) {
        /* Half an IDX pair is more likely a broken copy than a CSV layout. */
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOTFOUND,
                            "data directory '%s' has %s but no %s[.gz] for the %s split", dir,
                            images ? images_name : labels_name, images ? labels_name : images_name, split);
        goto done;
    }
    csv = find_file(dir, csv_name);
    if (csv) {
        rc = fedc_dataset_load_csv(csv, NULL, out, err, errlen);
        goto done;
    }
    rc = fedc_set_error(err, errlen, FEDC_ERR_NOTFOUND,
                        "data directory '%s' has no %s split: expected %s[.gz] and %s[.gz], or "
                        "%s[.gz]",
                        dir, split, images_name, labels_name, csv_name);
done:
    free(images);
    free(labels);
    free(csv);
    return rc;
}
