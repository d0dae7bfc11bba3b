/* The built-in trainer as client callbacks, shared by fedc client (one real
 * client) and fedc sim (many virtual ones). */
#ifndef FEDC_TOOLS_TRAINER_CLI_H
#define FEDC_TOOLS_TRAINER_CLI_H

#include "fedc/client.h"
#include "fedc/data.h"
#include "fedc/nn.h"

/* A poisoned update, for testing robust aggregation (--attack). With u =
 * trained - global, the client sends global - u (sign-flip), global + k*u
 * (scale), or global + noise with each tensor's standard deviation of u
 * (gaussian, seeded from the round's "seed" config key). */
typedef enum trainer_attack_kind {
    TRAINER_ATTACK_NONE = 0,
    TRAINER_ATTACK_SIGN_FLIP,
    TRAINER_ATTACK_GAUSSIAN,
    TRAINER_ATTACK_SCALE
} trainer_attack_kind;

typedef struct trainer_attack {
    trainer_attack_kind kind;
    double scale; /* k of TRAINER_ATTACK_SCALE */
} trainer_attack;

typedef struct trainer {
    fedc_dataset *train, *test; /* the client's local data (test may be NULL) */
    fedc_model *model;          /* created on demand for the architecture asked for */
    const char *default_arch;   /* offered when the server has no model */
    uint64_t seed;              /* initialisation of that offered model */
    fedc_device device;         /* where the model trains (zero: the CPU) */
    trainer_attack attack;      /* zero: honest updates */
    /* SCAFFOLD's client control variate c_i, kept across rounds: in the
     * file state_path when set (so it survives a restart; written
     * atomically after each round), else in memory (`control`). */
    const char *state_path;
    fedc_params *control;
    int control_announced; /* the first SCAFFOLD round has been logged */
    /* Record-level DP (DP-SGD): the RDP this client's records have spent
     * at each of the accountant's default orders, kept in the file
     * dp_state_path when set (so a restart does not forget it), else in
     * memory. */
    const char *dp_state_path;
    double *dp_rdp;
} trainer;

/* Frees what the trainer made (its model and in-memory state), not the
 * data. */
void trainer_release(trainer *t);

/* Parses an --attack value: sign-flip, gaussian or scale:K with K a finite
 * number. Returns 0, or -1 for anything else. */
int trainer_attack_parse(const char *s, trainer_attack *out);

/* The --attack values, for usage and error messages. */
#define TRAINER_ATTACK_VALUES "sign-flip, gaussian or scale:K (K a finite number)"

/* The callbacks; their user pointer is a trainer. */
extern const fedc_client_callbacks trainer_callbacks;

/* FEDC_ERR_SHAPE when d's examples do not fit the model's input. */
int trainer_check_geometry(trainer *t, const fedc_dataset *d, char *err, size_t errlen);

#endif
