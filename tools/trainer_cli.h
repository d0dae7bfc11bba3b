/* The built-in trainer as client callbacks, shared by fedc client (one real
 * client) and fedc sim (many virtual ones). */
#ifndef FEDC_TOOLS_TRAINER_CLI_H
#define FEDC_TOOLS_TRAINER_CLI_H

#include "fedc/client.h"
#include "fedc/data.h"
#include "fedc/nn.h"

typedef struct trainer {
    fedc_dataset *train, *test; /* the client's local data (test may be NULL) */
    fedc_model *model;          /* created on demand for the architecture asked for */
    const char *default_arch;   /* offered when the server has no model */
    uint64_t seed;              /* initialisation of that offered model */
    fedc_device device;         /* where the model trains (zero: the CPU) */
} trainer;

/* The callbacks; their user pointer is a trainer. */
extern const fedc_client_callbacks trainer_callbacks;

/* FEDC_ERR_SHAPE when d's examples do not fit the model's input. */
int trainer_check_geometry(trainer *t, const fedc_dataset *d, char *err, size_t errlen);

#endif
