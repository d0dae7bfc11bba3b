/* The server's side of its checkpoint (docs/checkpoints.md): the state
 * encoded and written after every round, written again on a suspend when
 * that failed, and read back on a resume, with metrics.jsonl trimmed to
 * the checkpoint's round. The file format itself is checkpoint.c. */
#include "server/checkpoint.h"
#include "server/server_impl.h"

/* The checkpoint of the round just ended, encoded. */
static int encode_checkpoint(fedc_server *s, uint8_t **buf, size_t *len, char *err, size_t errlen)
{
    const fedc_strategy *st = s->opt.strategy;
    fedc__checkpoint c;
    memset(&c, 0, sizeof c);
    c.round = s->round;
    c.seed = s->opt.seed;
    if (st && strlen(st->name) > FEDC__CHECKPOINT_MAX_NAME)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "the strategy's name is longer than %u bytes: a checkpoint cannot hold it",
                              FEDC__CHECKPOINT_MAX_NAME);
    if (st) snprintf(c.strategy, sizeof c.strategy, "%s", st->name);
    c.sampling = (unsigned)s->opt.sampling;
    c.fraction_fit = s->opt.fraction_fit;
    c.secagg = s->opt.secagg.enabled != 0;
    c.dp_mode = (unsigned)s->opt.dp.mode;
    c.dp_adaptive = s->opt.dp.adaptive != 0;
    c.dp_clip_option = s->opt.dp.clip;
    c.dp_noise_multiplier = s->opt.dp.noise_multiplier;
    c.dp_delta = s->opt.dp.delta;
    c.target_reached = s->target_reached;
    c.dp_steps = s->dp_steps;
    c.dp_clip = s->dp_clip;
    c.epsilon_record = s->epsilon_record;
    if (s->ddg_rdp) {
        size_t n = 0;
        fedc_rdp_default_orders(&n);
        c.ddg_rdp = s->ddg_rdp;
        c.ddg_orders = (uint32_t)n;
    }
    c.model = s->model->params;
    if (st && st->save(st->state, &c.strategy_state, &c.strategy_state_len))
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "strategy %s cannot save its state: out of memory",
                              st->name);
    int rc = fedc__checkpoint_encode(&c, buf, len, err, errlen);
    free(c.strategy_state);
    return rc;
}

/* Writes OUT/checkpoint.fedc for the round just ended. A failure is logged
 * and the federation goes on; the bytes are kept for fedc_server_suspend. */
void fedc__srv_write_checkpoint(fedc_server *s)
{
    const fedc_strategy *st = s->opt.strategy;
    if (!s->out_dir || s->ckpt_off || !s->model) return;
    if (st && (!st->save || !st->restore)) {
        s->ckpt_off = 1;
        fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT,
                 "strategy %s cannot save and restore its state: no checkpoints are written, so this "
                 "federation cannot be resumed",
                 st->name);
        return;
    }
    char err[FEDC_ERRMSG_MAX];
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = encode_checkpoint(s, &buf, &len, err, sizeof err);
    if (!rc) rc = fedc__checkpoint_write(s->out_dir, buf, len, err, sizeof err);
    free(s->ckpt_unsaved);
    s->ckpt_unsaved = NULL;
    s->ckpt_unsaved_len = 0;
    if (rc == FEDC_OK) {
        free(buf);
        s->ckpt_round = s->round;
        return;
    }
    fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT,
             "cannot write the checkpoint of round %llu: %s; the federation goes on, and a resume would "
             "start after round %llu",
             (unsigned long long)s->round, err, (unsigned long long)s->ckpt_round);
    s->ckpt_unsaved = buf;
    s->ckpt_unsaved_len = len;
    s->ckpt_unsaved_round = s->round;
}

/* The checkpoint of the last complete round on disk, when a write of it
 * failed before (for fedc_server_suspend). FEDC_ERR_IO with a message when
 * it is still not there. */
int fedc__srv_flush_checkpoint(fedc_server *s, char *err, size_t errlen)
{
    int rc = FEDC_OK;
    if (s->ckpt_unsaved) {
        rc = fedc__checkpoint_write(s->out_dir, s->ckpt_unsaved, s->ckpt_unsaved_len, err, errlen);
        if (rc == FEDC_OK) s->ckpt_round = s->ckpt_unsaved_round;
    } else if (s->out_dir && !s->ckpt_off && s->ckpt_round < s->ckpt_unsaved_round) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "it could not be made");
    }
    return rc;
}

/* The first option in which checkpoint c and opt differ, as "what": was
 * "a", now "b"; NULL when they agree. */
static const char *resume_mismatch(const fedc__checkpoint *c, const fedc_server_options *opt, char *was,
                                   char *now, size_t len)
{
    const char *sname = opt->strategy ? opt->strategy->name : "";
    if (strcmp(c->strategy, sname)) {
        snprintf(was, len, "%s", c->strategy[0] ? c->strategy : "none (FedAvg)");
        snprintf(now, len, "%s", sname[0] ? sname : "none (FedAvg)");
        return "the strategy";
    }
    if (c->seed != opt->seed) {
        snprintf(was, len, "%llu", (unsigned long long)c->seed);
        snprintf(now, len, "%llu", (unsigned long long)opt->seed);
        return "the seed";
    }
    if (c->sampling != (unsigned)opt->sampling || c->fraction_fit != opt->fraction_fit) {
        snprintf(was, len, "%s %g", c->sampling ? "poisson" : "fixed", c->fraction_fit);
        snprintf(now, len, "%s %g", opt->sampling ? "poisson" : "fixed", opt->fraction_fit);
        return "the sampling and fraction-fit";
    }
    if (c->secagg != (opt->secagg.enabled != 0)) {
        snprintf(was, len, "%s", c->secagg ? "on" : "off");
        snprintf(now, len, "%s", opt->secagg.enabled ? "on" : "off");
        return "secure aggregation";
    }
    if (c->dp_mode != (unsigned)opt->dp.mode || c->dp_adaptive != (opt->dp.adaptive != 0) ||
        (c->dp_mode != FEDC_DP_OFF &&
         (c->dp_clip_option != opt->dp.clip || c->dp_noise_multiplier != opt->dp.noise_multiplier ||
          c->dp_delta != opt->dp.delta))) {
        if (c->dp_mode == FEDC_DP_OFF)
            snprintf(was, len, "off");
        else
            snprintf(was, len, "%s%s, clip %g, noise multiplier %g, delta %g",
                     fedc_dp_mode_name((fedc_dp_mode)c->dp_mode), c->dp_adaptive ? " adaptive" : "",
                     c->dp_clip_option, c->dp_noise_multiplier, c->dp_delta);
        if (opt->dp.mode == FEDC_DP_OFF)
            snprintf(now, len, "off");
        else
            snprintf(now, len, "%s%s, clip %g, noise multiplier %g, delta %g",
                     fedc_dp_mode_name(opt->dp.mode), opt->dp.adaptive ? " adaptive" : "", opt->dp.clip,
                     opt->dp.noise_multiplier, opt->dp.delta);
        return "differential privacy";
    }
    return NULL;
}

/* fedc_server_options.resume_dir: the checkpoint's state into s and its
 * model into *model. */
int fedc__srv_load_checkpoint(fedc_server *s, const fedc_server_options *opt, fedc_params **model, char *err,
                              size_t errlen)
{
    const char *dir = opt->resume_dir;
    char why[FEDC_ERRMSG_MAX], was[160], now[160];
    fedc__checkpoint c;
    int rc = fedc__checkpoint_read(dir, &c, why, sizeof why);
    if (rc == FEDC_ERR_NOTFOUND)
        return fedc_set_error(err, errlen, rc,
                              "nothing to resume in '%s': it has no %s (one is written after every round "
                              "completed with --out)",
                              dir, FEDC__CHECKPOINT_FILE);
    if (rc) return fedc_set_error(err, errlen, rc, "cannot resume: %s", why);
    const char *what = resume_mismatch(&c, opt, was, now, sizeof was);
    size_t norders = 0;
    fedc_rdp_default_orders(&norders);
    if (what) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                            "cannot resume from '%s/%s': it was written with %s %s, and this server has %s; "
                            "resume with the options the federation started with",
                            dir, FEDC__CHECKPOINT_FILE, what, was, now);
    } else if (c.ddg_orders != (s->ddg_rdp ? norders : 0)) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "cannot resume from '%s/%s': it holds %u RDP orders of the distributed discrete "
                            "Gaussian; this server needs %zu",
                            dir, FEDC__CHECKPOINT_FILE, c.ddg_orders, s->ddg_rdp ? norders : 0);
    } else if (opt->initial_model &&
               fedc_params_check_same_layout(opt->initial_model, c.model, why, sizeof why)) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_SHAPE,
                            "cannot resume from '%s/%s': its model is not the one given (%s)", dir,
                            FEDC__CHECKPOINT_FILE, why);
    } else if (opt->strategy && !opt->strategy->restore) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                            "cannot resume: strategy %s cannot restore its state", opt->strategy->name);
    } else if (opt->strategy && (rc = opt->strategy->restore(opt->strategy->state, c.strategy_state,
                                                             c.strategy_state_len, why, sizeof why))) {
        rc = fedc_set_error(err, errlen, rc, "cannot resume from '%s/%s': strategy %s refused its state: %s",
                            dir, FEDC__CHECKPOINT_FILE, opt->strategy->name, why);
    }
    if (rc) {
        fedc__checkpoint_free(&c);
        return rc;
    }
    s->round = s->ckpt_round = c.round;
    s->target_reached = c.target_reached;
    s->dp_steps = c.dp_steps;
    s->dp_clip = c.dp_clip;
    s->epsilon_record = c.epsilon_record;
    if (s->ddg_rdp) memcpy(s->ddg_rdp, c.ddg_rdp, norders * sizeof *s->ddg_rdp);
    s->resumed = 1;
    *model = c.model;
    c.model = NULL;
    fedc__checkpoint_free(&c);
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "resuming from %s/%s after round %llu", dir, FEDC__CHECKPOINT_FILE,
             (unsigned long long)s->round);
    return FEDC_OK;
}

/* On resume: drops the lines of metrics.jsonl for rounds after `round`
 * (and any torn line), rewriting the file atomically. */
int fedc__srv_trim_metrics(const char *path, uint64_t round, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return FEDC_OK;
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    }
    char *text = NULL, *kept = NULL;
    size_t cap = 0, len = 0, klen = 0, dropped = 0;
    int rc = FEDC_OK;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *t = realloc(text, cap = (cap ? cap * 2 : 8192));
            if (!t) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
                break;
            }
            text = t;
        }
        size_t k = fread(text + len, 1, cap - len - 1, f);
        len += k;
        if (k == 0) break;
    }
    if (!rc && ferror(f)) rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot read '%s'", path);
    fclose(f);
    if (!rc && !(kept = malloc(len + 1))) rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    uint64_t last = 0;
    for (size_t at = 0; !rc && at < len;) {
        char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len;
        text[end] = '\0';
        cJSON *o = nl ? cJSON_Parse(text + at) : NULL; /* a line without its newline is torn */
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "round");
        /* Each round once, in order, up to the checkpoint's. */
        if (cJSON_IsNumber(r) && r->valuedouble > (double)last && r->valuedouble <= (double)round) {
            last = (uint64_t)r->valuedouble;
            memcpy(kept + klen, text + at, end - at);
            klen += end - at;
            kept[klen++] = '\n';
        } else {
            dropped++;
        }
        cJSON_Delete(o);
        at = end + 1;
    }
    if (!rc && dropped) {
        rc = fedc__write_file_atomic(path, kept, klen, err, errlen);
        if (!rc)
            fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "%s: dropped %zu lines of rounds after %llu", path,
                     dropped, (unsigned long long)round);
    }
    free(text);
    free(kept);
    return rc;
}
