/*
 * A fedc client whose model and training code are its own: multinomial
 * logistic regression written out by hand, with no use of fedc's built-in
 * trainer. It shows everything a client needs:
 *
 *   get_parameters  defines the model (the server starts from it when it
 *                   has none of its own),
 *   fit             trains on the local data from the global parameters,
 *   evaluate        measures the global model on the local test split.
 *
 * Build:  cc custom_client.c $(pkg-config --cflags --libs fedc) -lm
 * Run:    custom_client HOST:PORT DATA_DIR [NODE_ID]
 * with the server started without --model, e.g.
 *         fedc server --min-clients 2 --rounds 5 --cert ... --key ...
 *
 * TLS (docs/security.md) from the environment: FEDC_TLS_CA (the CA of the
 * server's certificate), and FEDC_TLS_CERT and FEDC_TLS_KEY when the
 * server asks for client certificates; FEDC_INSECURE=1 for plaintext.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fedc/client.h>
#include <fedc/data.h>

typedef struct local {
    fedc_dataset *train, *test;
    int classes;
} local;

/* logits = W x + b for one example; W is [classes, features]. */
static void forward(const float *w, const float *b, const float *x, size_t f, int k, double *logits)
{
    for (int c = 0; c < k; c++) {
        double s = b[c];
        const float *row = w + (size_t)c * f;
        for (size_t i = 0; i < f; i++) s += row[i] * x[i];
        logits[c] = s;
    }
}

/* Softmax in place; returns -log p[label]. */
static double softmax_xent(double *z, int k, int label)
{
    double m = z[0], sum = 0;
    for (int c = 1; c < k; c++) m = z[c] > m ? z[c] : m;
    for (int c = 0; c < k; c++) sum += (z[c] = exp(z[c] - m));
    for (int c = 0; c < k; c++) z[c] /= sum;
    return -log(z[label] > 1e-12 ? z[label] : 1e-12);
}

static int get_parameters(void *user, const fedc_config *cfg, fedc_params **out, char *err, size_t errlen)
{
    local *l = user;
    (void)cfg;
    fedc_params *p = fedc_params_create();
    int64_t wshape[2] = {l->classes, (int64_t)l->train->features}, bshape[1] = {l->classes};
    int rc = p ? FEDC_OK : FEDC_ERR_NOMEM;
    /* Zero weights are a fine start for a convex model. */
    if (!rc) rc = fedc_params_add(p, "linear.weight", FEDC_F32, 2, wshape, NULL, NULL, err, errlen);
    if (!rc) rc = fedc_params_add(p, "linear.bias", FEDC_F32, 1, bshape, NULL, NULL, err, errlen);
    if (rc) {
        fedc_params_destroy(p);
        return rc;
    }
    *out = p;
    return FEDC_OK;
}

/* Finds our two tensors in whatever the server sent, checking their shapes. */
static int unpack(const local *l, const fedc_params *p, float **w, float **b, char *err, size_t errlen)
{
    fedc_tensor *tw = fedc_params_find(p, "linear.weight"), *tb = fedc_params_find(p, "linear.bias");
    if (!tw || !tb || tw->dtype != FEDC_F32 || tw->ndim != 2 || tw->shape[0] != l->classes ||
        (size_t)tw->shape[1] != l->train->features || tb->ndim != 1 || tb->shape[0] != l->classes)
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE,
                              "expected linear.weight [%d, %zu] and linear.bias [%d]", l->classes,
                              l->train->features, l->classes);
    *w = tw->data;
    *b = tb->data;
    return FEDC_OK;
}

static int fit(void *user, fedc_params *params, const fedc_config *cfg, uint64_t *num_examples,
               fedc_config *metrics, char *err, size_t errlen)
{
    local *l = user;
    float *w, *b;
    int rc = unpack(l, params, &w, &b, err, errlen);
    if (rc) return rc;
    double lr = fedc_config_f64_or(cfg, "lr", 0.05);
    int64_t epochs = fedc_config_i64_or(cfg, "local_epochs", 1);
    size_t f = l->train->features;
    int k = l->classes;
    double z[256], loss = 0;
    /* Visit the examples in an order drawn from the round's seed. */
    fedc_rng rng;
    fedc_rng_seed(&rng, (uint64_t)fedc_config_i64_or(cfg, "seed", 0));
    uint32_t *order = malloc(l->train->n * sizeof *order);
    if (!order) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < l->train->n; i++) order[i] = (uint32_t)i;
    for (int64_t e = 0; e < epochs; e++) {
        fedc_rng_shuffle_u32(&rng, order, l->train->n);
        loss = 0;
        for (size_t s = 0; s < l->train->n; s++) {
            const float *x = l->train->x + (size_t)order[s] * f;
            int y = l->train->y[order[s]];
            forward(w, b, x, f, k, z);
            loss += softmax_xent(z, k, y);
            /* Plain SGD, one example at a time: dL/dz = p - onehot(y). */
            for (int c = 0; c < k; c++) {
                double g = (z[c] - (c == y)) * lr;
                float *row = w + (size_t)c * f;
                for (size_t i = 0; i < f; i++) row[i] -= (float)(g * x[i]);
                b[c] -= (float)g;
            }
        }
    }
    free(order);
    *num_examples = l->train->n;
    fedc_config_set_f64(metrics, "train_loss", loss / (double)l->train->n);
    return FEDC_OK;
}

static int evaluate(void *user, const fedc_params *params, const fedc_config *cfg, double *loss,
                    uint64_t *num_examples, fedc_config *metrics, char *err, size_t errlen)
{
    local *l = user;
    float *w, *b;
    (void)cfg;
    int rc = unpack(l, params, &w, &b, err, errlen);
    if (rc) return rc;
    double z[256], total = 0;
    size_t right = 0;
    for (size_t s = 0; s < l->test->n; s++) {
        forward(w, b, l->test->x + s * l->test->features, l->test->features, l->classes, z);
        int best = 0;
        for (int c = 1; c < l->classes; c++) best = z[c] > z[best] ? c : best;
        right += best == l->test->y[s];
        total += softmax_xent(z, l->classes, l->test->y[s]);
    }
    *loss = total / (double)l->test->n;
    *num_examples = l->test->n;
    fedc_config_set_f64(metrics, "accuracy", (double)right / (double)l->test->n);
    return FEDC_OK;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST:PORT DATA_DIR [NODE_ID]\n", argv[0]);
        return 2;
    }
    char err[FEDC_ERRMSG_MAX];
    local l = {0};
    /* The data never leaves this process: only the parameters do. */
    if (fedc_dataset_load_dir(argv[2], "train", &l.train, err, sizeof err) ||
        fedc_dataset_load_dir(argv[2], "test", &l.test, err, sizeof err)) {
        fprintf(stderr, "custom_client: %s\n", err);
        fedc_dataset_destroy(l.train);
        return 1;
    }
    l.classes = 10;
    fedc_client_options opt;
    fedc_client_options_init(&opt);
    opt.server = argv[1];
    opt.node_id = argc > 3 ? argv[3] : NULL;
    opt.tls_ca = getenv("FEDC_TLS_CA");
    opt.tls_cert = getenv("FEDC_TLS_CERT");
    opt.tls_key = getenv("FEDC_TLS_KEY");
    opt.insecure = getenv("FEDC_INSECURE") && !strcmp(getenv("FEDC_INSECURE"), "1");
    fedc_client_callbacks cb = {get_parameters, fit, evaluate};
    fedc_client *c = fedc_client_create(&opt, &cb, &l);
    int rc = c ? fedc_client_run(c) : FEDC_ERR_INVALID;
    if (rc) fprintf(stderr, "custom_client: %s\n", c ? fedc_client_errmsg(c) : "bad options");
    fedc_client_destroy(c);
    fedc_dataset_destroy(l.train);
    fedc_dataset_destroy(l.test);
    return rc ? 1 : 0;
}
