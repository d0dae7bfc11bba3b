/* Paths and directories for the data layer's readers and writers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"

char *fedc__path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + (size_t)slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

int fedc__path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int fedc__mkdirs(const char *dir, char *err, size_t errlen)
{
    size_t len = strlen(dir);
    if (len == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "empty directory name");
    char *p = malloc(len + 1);
    if (!p) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    memcpy(p, dir, len + 1);
    int rc = FEDC_OK;
    /* Walk the path once, creating each prefix that ends at a slash, then
     * the whole path; existing directories are fine. */
    for (size_t i = 1; i <= len; i++) {
        if (i < len && p[i] != '/') continue;
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create directory '%s': %s", p,
                                strerror(errno));
            goto done;
        }
        p[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "'%s' exists and is not a directory", dir);
done:
    free(p);
    return rc;
}
