/* A client for tests: it sends back the model it received, unchanged except
 * for the very last value of the last tensor, which it sets to NaN ("nan")
 * or to 1e30 ("huge"). By then the server has already folded every earlier
 * chunk of the update, so the rejection must take all of them back out.
 *
 * usage: poison_client HOST:PORT NODE_ID nan|huge */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fedc/client.h"

static int g_huge;

static int fit(void *user, fedc_params *p, const fedc_config *cfg, uint64_t *n, fedc_config *metrics,
               char *err, size_t errlen)
{
    (void)user;
    (void)cfg;
    (void)metrics;
    size_t count = fedc_params_count(p);
    fedc_tensor *t = fedc_params_at(p, count - 1);
    if (!t || t->dtype != FEDC_F32 || t->nbytes < 4)
        return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED, "need an F32 last tensor");
    ((float *)t->data)[t->nbytes / 4 - 1] = g_huge ? 1e30f : NAN;
    *n = 1000;
    return FEDC_OK;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: poison_client HOST:PORT NODE_ID nan|huge\n");
        return 2;
    }
    g_huge = !strcmp(argv[3], "huge");
    fedc_client_options opt;
    fedc_client_options_init(&opt);
    opt.server = argv[1];
    opt.node_id = argv[2];
    opt.insecure = 1; /* its server runs with --insecure: this client tests update checks, not TLS */
    fedc_client_callbacks cb = {NULL, fit, NULL};
    fedc_client *c = fedc_client_create(&opt, &cb, NULL);
    int rc = fedc_client_run(c);
    if (rc) fprintf(stderr, "poison_client: %s\n", fedc_client_errmsg(c));
    fedc_client_destroy(c);
    return rc ? 1 : 0;
}
