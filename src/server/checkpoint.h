/* The server's checkpoint (docs/checkpoints.md): what the next round
 * depends on, written after every round to OUT/checkpoint.fedc and read
 * back by fedc_server_options.resume_dir. One file, so the model and the
 * state that goes with it are always of the same round. */
#ifndef FEDC_SERVER_CHECKPOINT_H
#define FEDC_SERVER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/tensor.h"

#define FEDC__CHECKPOINT_FILE    "checkpoint.fedc"
#define FEDC__CHECKPOINT_VERSION 1u
/* The longest strategy name a checkpoint holds. */
#define FEDC__CHECKPOINT_MAX_NAME 64u

typedef struct fedc__checkpoint {
    uint64_t round; /* rounds complete */
    /* The options a resume must share. */
    uint64_t seed;
    char strategy[FEDC__CHECKPOINT_MAX_NAME + 1]; /* "": none (plain FedAvg) */
    unsigned sampling;                            /* fedc_sampling */
    double fraction_fit;
    int secagg;
    unsigned dp_mode; /* fedc_dp_mode */
    int dp_adaptive;
    double dp_clip_option, dp_noise_multiplier, dp_delta;
    /* The state. */
    int target_reached;
    uint64_t dp_steps;
    double dp_clip;        /* the clip norm of the next round */
    double epsilon_record; /* NaN: none */
    double *ddg_rdp;       /* NULL when ddg_orders is 0 */
    uint32_t ddg_orders;
    uint8_t *strategy_state; /* the strategy's `save` bytes (NULL when none) */
    size_t strategy_state_len;
    fedc_params *model;
} fedc__checkpoint;

/* Serialises c to a new buffer (*buf, *len; free() it). FEDC_ERR_NOMEM, or
 * FEDC_ERR_INVALID (with a message) for a model the format cannot hold. */
int fedc__checkpoint_encode(const fedc__checkpoint *c, uint8_t **buf, size_t *len, char *err, size_t errlen);
/* Parses bytes written by fedc__checkpoint_encode into *c (owned: free it
 * with fedc__checkpoint_free). FEDC_ERR_FORMAT with a message naming what
 * is wrong, FEDC_ERR_VERSION for another version, FEDC_ERR_NOMEM; *c is
 * then empty. */
int fedc__checkpoint_decode(const uint8_t *buf, size_t len, fedc__checkpoint *c, char *err, size_t errlen);
/* Frees what fedc__checkpoint_decode allocated and empties *c. */
void fedc__checkpoint_free(fedc__checkpoint *c);
/* Writes len bytes to DIR/checkpoint.fedc atomically: a temporary file,
 * fsync, rename, fsync of DIR. */
int fedc__checkpoint_write(const char *dir, const uint8_t *buf, size_t len, char *err, size_t errlen);
/* Reads and parses DIR/checkpoint.fedc; FEDC_ERR_NOTFOUND when there is none. */
int fedc__checkpoint_read(const char *dir, fedc__checkpoint *c, char *err, size_t errlen);
/* Writes the bytes to `path` through a temporary file in the same
 * directory, fsync, rename and an fsync of the directory. */
int fedc__write_file_atomic(const char *path, const void *buf, size_t len, char *err, size_t errlen);

#endif
