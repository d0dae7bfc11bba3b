/*
 * libFuzzer target: the saved state of the built-in strategies
 * (src/strategy/strategy.c, `restore` and `save` of include/fedc/strategy.h).
 *
 * Every built-in strategy (created once, with default hyperparameters and
 * proximal_mu for fedprox) gets the whole input as the bytes to restore.
 * Nothing may crash; a refusal is FEDC_ERR_FORMAT or FEDC_ERR_NOMEM with a
 * message; after a successful restore, `save` must succeed and give back
 * exactly the bytes restored (the format has a single encoding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/config.h"
#include "fedc/core.h"
#include "fedc/strategy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const g_names[] = {"fedavg",  "fedavgm",   "fedadagrad", "fedadam", "fedyogi",
                                      "fedprox", "scaffold",  "fednova",    "median",  "trimmed-mean",
                                      "krum",    "multikrum", "bulyan"};
enum { NSTRAT = sizeof g_names / sizeof g_names[0] };
static fedc_strategy *g_st[NSTRAT];

static void setup(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_config *prox = fedc_config_create();
    if (!prox || fedc_config_set_f64(prox, "proximal_mu", 0.01) != FEDC_OK) abort();
    for (int i = 0; i < NSTRAT; i++) {
        const fedc_config *params = strcmp(g_names[i], "fedprox") == 0 ? prox : NULL;
        if (fedc_strategy_create(g_names[i], params, &g_st[i], err, sizeof err) != FEDC_OK ||
            !g_st[i]->save || !g_st[i]->restore)
            abort();
    }
    fedc_config_destroy(prox);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    for (int i = 0; i < NSTRAT; i++) {
        fedc_strategy *s = g_st[i];
        char err[FEDC_ERRMSG_MAX];
        err[0] = '\0';
        int rc = s->restore(s->state, data, size, err, sizeof err);
        if (rc != FEDC_OK) {
            if ((rc != FEDC_ERR_FORMAT && rc != FEDC_ERR_NOMEM) || err[0] == '\0') abort();
            continue;
        }
        uint8_t *buf = NULL;
        size_t len = 0;
        if (s->save(s->state, &buf, &len) != FEDC_OK) abort();
        if (len != size || memcmp(buf, data, size) != 0) abort();
        free(buf);
    }
    return 0;
}
