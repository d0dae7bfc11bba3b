/*
 * Config and metrics maps: small ordered maps from string keys to scalar
 * values (double, 64-bit integer, string or boolean).
 *
 * The server sends a config map with every training or evaluation request
 * ("round", "lr", "local_epochs", ... see docs/protocol.md) and clients
 * answer with a metrics map ("train_loss", "accuracy", ...).
 */
#ifndef FEDC_CONFIG_H
#define FEDC_CONFIG_H

#include <stdint.h>

#include "fedc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fedc_value_kind {
    FEDC_VALUE_F64 = 1,
    FEDC_VALUE_I64 = 2,
    FEDC_VALUE_STR = 3,
    FEDC_VALUE_BOOL = 4
} fedc_value_kind;

typedef struct fedc_config fedc_config;

/* Creates an empty map; NULL when out of memory. */
fedc_config *fedc_config_create(void);
/* Frees the map and its strings. No-op on NULL. */
void fedc_config_destroy(fedc_config *c);
/* Removes every entry. */
void fedc_config_clear(fedc_config *c);

/* Setters insert the key or replace its value (and kind). Keys and string
 * values are copied. They fail only with FEDC_ERR_NOMEM or, for an empty
 * key, FEDC_ERR_INVALID. */
int fedc_config_set_f64(fedc_config *c, const char *key, double v);
int fedc_config_set_i64(fedc_config *c, const char *key, int64_t v);
int fedc_config_set_str(fedc_config *c, const char *key, const char *v);
int fedc_config_set_bool(fedc_config *c, const char *key, int v);

/* Getters return FEDC_OK and the value, FEDC_ERR_NOTFOUND when the key is
 * absent, or FEDC_ERR_INVALID when the kind does not convert: f64 accepts an
 * integer value, i64 accepts a double that is an exact integer. The string
 * returned by get_str belongs to the map. */
int fedc_config_get_f64(const fedc_config *c, const char *key, double *out);
int fedc_config_get_i64(const fedc_config *c, const char *key, int64_t *out);
int fedc_config_get_str(const fedc_config *c, const char *key, const char **out);
int fedc_config_get_bool(const fedc_config *c, const char *key, int *out);

/* Like the getters, but return `def` when the key is absent or has the
 * wrong kind. */
double fedc_config_f64_or(const fedc_config *c, const char *key, double def);
int64_t fedc_config_i64_or(const fedc_config *c, const char *key, int64_t def);

/* Iteration in insertion order. Index out of range gives NULL / 0. */
size_t fedc_config_count(const fedc_config *c);
const char *fedc_config_key_at(const fedc_config *c, size_t i);
fedc_value_kind fedc_config_kind_at(const fedc_config *c, size_t i);
/* Copies entry i into the out-parameters that match its kind. */
void fedc_config_value_at(const fedc_config *c, size_t i, double *f, int64_t *n, const char **s, int *b);

/* Copies every entry of src into dst (replacing equal keys). */
int fedc_config_merge(fedc_config *dst, const fedc_config *src);

#ifdef __cplusplus
}
#endif
#endif
