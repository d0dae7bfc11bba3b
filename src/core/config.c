/* Ordered string-keyed maps of scalars. Maps hold a handful of entries, so
 * a linear search is the fastest and simplest lookup. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/config.h"

typedef struct entry {
    char *key;
    fedc_value_kind kind;
    double f;
    int64_t i;
    char *s;
    int b;
} entry;

struct fedc_config {
    size_t count, cap;
    entry *e;
};

fedc_config *fedc_config_create(void)
{
    return calloc(1, sizeof(fedc_config));
}

void fedc_config_clear(fedc_config *c)
{
    if (!c) return;
    for (size_t k = 0; k < c->count; k++) {
        free(c->e[k].key);
        free(c->e[k].s);
    }
    c->count = 0;
}

void fedc_config_destroy(fedc_config *c)
{
    if (!c) return;
    fedc_config_clear(c);
    free(c->e);
    free(c);
}

static const entry *find(const fedc_config *c, const char *key)
{
    for (size_t k = 0; c && key && k < c->count; k++)
        if (!strcmp(c->e[k].key, key)) return &c->e[k];
    return NULL;
}

/* Returns the entry for key, inserting an empty one if needed, with any old
 * string value released. */
static entry *slot(fedc_config *c, const char *key)
{
    if (!c || !key || !*key) return NULL;
    entry *e = (entry *)find(c, key);
    if (e) {
        free(e->s);
        e->s = NULL;
        return e;
    }
    if (c->count == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 8;
        entry *ne = realloc(c->e, ncap * sizeof *ne);
        if (!ne) return NULL;
        c->e = ne;
        c->cap = ncap;
    }
    e = &c->e[c->count];
    memset(e, 0, sizeof *e);
    e->key = strdup(key);
    if (!e->key) return NULL;
    c->count++;
    return e;
}

#define SETTER_STATUS(c, key) ((c) && (key) && *(key) ? FEDC_ERR_NOMEM : FEDC_ERR_INVALID)

int fedc_config_set_f64(fedc_config *c, const char *key, double v)
{
    entry *e = slot(c, key);
    if (!e) return SETTER_STATUS(c, key);
    e->kind = FEDC_VALUE_F64;
    e->f = v;
    return FEDC_OK;
}

int fedc_config_set_i64(fedc_config *c, const char *key, int64_t v)
{
    entry *e = slot(c, key);
    if (!e) return SETTER_STATUS(c, key);
    e->kind = FEDC_VALUE_I64;
    e->i = v;
    return FEDC_OK;
}

int fedc_config_set_str(fedc_config *c, const char *key, const char *v)
{
    entry *e = slot(c, key);
    if (!e) return SETTER_STATUS(c, key);
    e->s = strdup(v ? v : "");
    if (!e->s) return FEDC_ERR_NOMEM;
    e->kind = FEDC_VALUE_STR;
    return FEDC_OK;
}

int fedc_config_set_bool(fedc_config *c, const char *key, int v)
{
    entry *e = slot(c, key);
    if (!e) return SETTER_STATUS(c, key);
    e->kind = FEDC_VALUE_BOOL;
    e->b = v != 0;
    return FEDC_OK;
}

int fedc_config_get_f64(const fedc_config *c, const char *key, double *out)
{
    const entry *e = find(c, key);
    if (!e) return FEDC_ERR_NOTFOUND;
    if (e->kind == FEDC_VALUE_F64)
        *out = e->f;
    else if (e->kind == FEDC_VALUE_I64)
        *out = (double)e->i;
    else
        return FEDC_ERR_INVALID;
    return FEDC_OK;
}

int fedc_config_get_i64(const fedc_config *c, const char *key, int64_t *out)
{
    const entry *e = find(c, key);
    if (!e) return FEDC_ERR_NOTFOUND;
    if (e->kind == FEDC_VALUE_I64)
        *out = e->i;
    else if (e->kind == FEDC_VALUE_F64 && e->f == nearbyint(e->f) && fabs(e->f) < 9.2e18)
        *out = (int64_t)e->f;
    else
        return FEDC_ERR_INVALID;
    return FEDC_OK;
}

int fedc_config_get_str(const fedc_config *c, const char *key, const char **out)
{
    const entry *e = find(c, key);
    if (!e) return FEDC_ERR_NOTFOUND;
    if (e->kind != FEDC_VALUE_STR) return FEDC_ERR_INVALID;
    *out = e->s;
    return FEDC_OK;
}

int fedc_config_get_bool(const fedc_config *c, const char *key, int *out)
{
    const entry *e = find(c, key);
    if (!e) return FEDC_ERR_NOTFOUND;
    if (e->kind != FEDC_VALUE_BOOL) return FEDC_ERR_INVALID;
    *out = e->b;
    return FEDC_OK;
}

double fedc_config_f64_or(const fedc_config *c, const char *key, double def)
{
    double v;
    return fedc_config_get_f64(c, key, &v) == FEDC_OK ? v : def;
}

int64_t fedc_config_i64_or(const fedc_config *c, const char *key, int64_t def)
{
    int64_t v;
    return fedc_config_get_i64(c, key, &v) == FEDC_OK ? v : def;
}

size_t fedc_config_count(const fedc_config *c)
{
    return c ? c->count : 0;
}

const char *fedc_config_key_at(const fedc_config *c, size_t i)
{
    return (c && i < c->count) ? c->e[i].key : NULL;
}

fedc_value_kind fedc_config_kind_at(const fedc_config *c, size_t i)
{
    return (c && i < c->count) ? c->e[i].kind : (fedc_value_kind)0;
}

void fedc_config_value_at(const fedc_config *c, size_t i, double *f, int64_t *n, const char **s, int *b)
{
    if (!c || i >= c->count) return;
    const entry *e = &c->e[i];
    if (f) *f = e->f;
    if (n) *n = e->i;
    if (s) *s = e->s;
    if (b) *b = e->b;
}

int fedc_config_merge(fedc_config *dst, const fedc_config *src)
{
    for (size_t k = 0; src && k < src->count; k++) {
        const entry *e = &src->e[k];
        int rc = FEDC_OK;
        switch (e->kind) {
        case FEDC_VALUE_F64: rc = fedc_config_set_f64(dst, e->key, e->f); break;
        case FEDC_VALUE_I64: rc = fedc_config_set_i64(dst, e->key, e->i); break;
        case FEDC_VALUE_STR: rc = fedc_config_set_str(dst, e->key, e->s); break;
        case FEDC_VALUE_BOOL: rc = fedc_config_set_bool(dst, e->key, e->b); break;
        }
        if (rc) return rc;
    }
    return FEDC_OK;
}
